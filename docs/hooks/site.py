"""MkDocs hooks: the pages and files this site derives from the code and the repository.

- ``openapi.json``: the OpenAPI document ``chalicelib.openapi.document`` builds with prod's
  settings (its ``environment_variables`` in ``.chalice/config.json``), the document prod's
  ``GET /openapi.json`` serves; the API page's reference section is rendered from it.
- ``changelog.md``: ``CHANGELOG.md``, its links made relative to the site.
- ``benchmarks/results.md``: ``BENCHMARKS.md`` as ``make bench`` last wrote it, with its
  charts and summary from ``bench/results/``.

Nothing here is copied by hand, so the site cannot drift from what it describes. A missing
source (a setting prod lacks, a file gone) fails the build.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

from mkdocs.config.defaults import MkDocsConfig
from mkdocs.structure.files import File, Files
from mkdocs.structure.pages import Page

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:  # `mkdocs` run as a script: the project is not on the path
    sys.path.insert(0, str(ROOT))

STAGE = "prod"
OPENAPI_FILE = "openapi.json"
REFERENCE_MARKER = "<!-- openapi reference: rendered here by docs/hooks/site.py -->"
API_PAGE = "api.md"
CHANGELOG_PAGE = "changelog.md"
RESULTS_DIR = "benchmarks"
RESULTS_PAGE = f"{RESULTS_DIR}/results.md"


def prod_document() -> dict[str, Any]:
    """The OpenAPI document of the prod stage, as its API serves it."""
    from chalicelib.config import Settings, auth
    from chalicelib.openapi import document

    config = json.loads((ROOT / ".chalice" / "config.json").read_text())
    env = config["stages"][STAGE]["environment_variables"]
    return document(Settings.from_mapping(env), auth(env))


def _repository_links(markdown: str, prefix: str) -> str:
    """Links written for the repository's root (``docs/x.md``), made relative to a page
    ``prefix`` deep in the site."""
    return re.sub(r"\]\(docs/", f"]({prefix}", markdown)


def changelog_page() -> str:
    return _repository_links((ROOT / "CHANGELOG.md").read_text(), "")


def results_page() -> str:
    text = (ROOT / "BENCHMARKS.md").read_text()
    text = text.replace("](bench/results/", "](")
    return _repository_links(text, "../")


def on_files(files: Files, config: MkDocsConfig) -> Files:
    files.append(
        File.generated(config, OPENAPI_FILE, content=json.dumps(prod_document(), indent=2))
    )
    files.append(File.generated(config, CHANGELOG_PAGE, content=changelog_page()))
    files.append(File.generated(config, RESULTS_PAGE, content=results_page()))
    for path in sorted((ROOT / "bench" / "results").iterdir()):
        if path.suffix in (".png", ".json") and path.name != "benchmarks.json":
            files.append(
                File.generated(config, f"{RESULTS_DIR}/{path.name}", abs_src_path=str(path))
            )
    return files


def on_page_markdown(markdown: str, page: Page, config: MkDocsConfig, files: Files) -> str:
    if page.file.src_uri != API_PAGE:
        return markdown
    if REFERENCE_MARKER not in markdown:
        raise ValueError(f"{API_PAGE} lost its marker {REFERENCE_MARKER!r}")
    return markdown.replace(REFERENCE_MARKER, render_reference(prod_document()))


# --- the reference, as Markdown --------------------------------------------------------


def render_reference(doc: dict[str, Any]) -> str:
    """Every operation (parameters, body, answers) and every schema of ``doc``."""
    lines = [
        f"Prod's document, OpenAPI {doc['openapi']}: [{OPENAPI_FILE}]({OPENAPI_FILE}). "
        + _cell(doc["info"]["description"]),
        "",
    ]
    for path, operations in doc["paths"].items():
        for method, operation in operations.items():
            lines += _operation(path, method, operation)
    lines += ["### Schemas", ""]
    for name, schema in doc["components"]["schemas"].items():
        lines += _schema(name, schema)
    return "\n".join(lines)


def _operation(path: str, method: str, operation: dict[str, Any]) -> list[str]:
    lines = [f"### `{method.upper()} {path}`", "", _cell(operation["summary"]) + ".", ""]
    if "security" in operation:
        lines += ["Needs the `x-api-key` header (a stage that requires a key).", ""]
    parameters = operation.get("parameters", [])
    if parameters:
        lines += ["| Parameter | In | Schema | Description |", "| --- | --- | --- | --- |"]
        for p in parameters:
            required = " (required)" if p.get("required") else ""
            lines.append(
                f"| `{p['name']}`{required} | {p['in']} | {_type(p['schema'])} "
                f"| {_cell(p.get('description', ''))} |"
            )
        lines.append("")
    body = operation.get("requestBody")
    if body:
        (content_type, content), *_ = body["content"].items()
        lines += [f"Body ({content_type}): {_type(content['schema'])}.", ""]
        if "properties" in content["schema"]:
            lines += _fields(content["schema"])
    lines += ["| Answer | Description | Body |", "| --- | --- | --- |"]
    for status, response in operation["responses"].items():
        content = response.get("content", {})
        shown = ", ".join(
            f"{_type(c['schema'])} ({t})" if "schema" in c else t for t, c in content.items()
        )
        headers = ", ".join(f"`{h}`" for h in response.get("headers", {}))
        described = _cell(response["description"]) + (f" Headers: {headers}." if headers else "")
        lines.append(f"| {status} | {described} | {shown} |")
    return [*lines, ""]


def _schema(name: str, schema: dict[str, Any]) -> list[str]:
    lines = [f"#### {name}", ""]
    if "description" in schema:
        lines += [_cell(schema["description"]), ""]
    if "oneOf" in schema:
        variants = ", ".join(_type(v) for v in schema["oneOf"])
        by = schema.get("discriminator", {}).get("propertyName")
        lines += [f"One of {variants}" + (f", chosen by `{by}`." if by else "."), ""]
    return lines + _fields(schema)


def _fields(schema: dict[str, Any]) -> list[str]:
    """A table of an object schema's fields; nothing for a schema without any."""
    properties = schema.get("properties", {})
    if not properties:
        return []
    required = set(schema.get("required", []))
    lines = ["| Field | Schema | Description |", "| --- | --- | --- |"]
    for field, spec in properties.items():
        mark = " (required)" if field in required else ""
        lines.append(f"| `{field}`{mark} | {_type(spec)} | {_cell(spec.get('description', ''))} |")
    return [*lines, ""]


_LIMITS = (
    ("minimum", "≥ {}"),
    ("maximum", "≤ {}"),
    ("minLength", "length ≥ {}"),
    ("maxLength", "length ≤ {}"),
    ("minItems", "items ≥ {}"),
    ("maxItems", "items ≤ {}"),
    ("pattern", "pattern `{}`"),
    ("format", "{}"),
    ("default", "default {}"),
)


def _type(schema: dict[str, Any]) -> str:
    """A schema in a few words: a link for a reference, else its type and limits."""
    if "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[-1]
        return f"[{name}](#{name.lower()})"
    if "oneOf" in schema:
        return " or ".join(_type(s) for s in schema["oneOf"])
    kind = schema.get("type", "any")
    if kind == "array" and "items" in schema:
        kind = f"array of {_type(schema['items'])}"
    if "enum" in schema:
        kind += " (" + ", ".join(f"`{json.dumps(v)}`" for v in schema["enum"]) + ")"
    limits = [text.format(schema[key]) for key, text in _LIMITS if key in schema]
    if schema.get("nullable"):
        limits.append("or null")
    return kind + (", " + ", ".join(limits) if limits else "")


def _cell(text: str) -> str:
    """Text for a table cell: one line, no bare pipe."""
    return " ".join(str(text).split()).replace("|", "\\|")
