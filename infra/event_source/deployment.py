"""What an instance may import: the deployment package and Lambda's Python runtime.

On AWS a function imports from its deployment package and from the runtime, nothing
else. ``chalice package`` zips ``app.py``, ``chalicelib/``, ``vendor/``'s contents,
Chalice's runtime (``chalice/__init__.py`` and ``chalice/app.py`` only: see
``chalice.deploy.packager``) and what pip installs for ``requirements.txt``; Lambda's
Python runtime adds the standard library and boto3 with its dependencies. Locally every
package the developer installed sits in the same site-packages, so ``import_world``
lists the files that belong to that world, and the instance's import guard (in
``bootstrap``) refuses any module found elsewhere, as Lambda would: ModuleNotFoundError.

Dependencies are followed through the installed distributions' metadata (what pip
resolved): ``Requires-Dist`` entries whose environment marker holds for this
interpreter (the local Python is the runtime's version, as Chalice deploys it) and for
the extras requested. A requirement that is not installed locally is reported, since no
local import can find it anyway.
"""

from __future__ import annotations

import logging
import operator
import os
import platform
import re
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from importlib import metadata
from importlib.machinery import all_suffixes
from pathlib import Path

log = logging.getLogger(__name__)

# What Lambda's Python runtime provides besides the standard library: boto3 and
# whatever it depends on (botocore, s3transfer, jmespath, python-dateutil, six, urllib3).
RUNTIME_DISTRIBUTIONS = ("boto3",)
# Chalice's packager leaves the chalice distribution out and adds these two files.
CHALICE_RUNTIME_FILES = ("__init__.py", "app.py")
PACKAGED_DIRECTORIES = ("chalicelib", "vendor")  # zipped whole, beside app.py
PACKAGED_FILES = ("app.py",)


@dataclass(frozen=True)
class ImportWorld:
    """Where an instance may import from: exact files, and directories taken whole.

    Paths are absolute and resolved (symlinks followed), as the guard compares them.
    """

    files: frozenset[str] = field(default_factory=frozenset)
    directories: tuple[str, ...] = ()
    distributions: tuple[str, ...] = ()  # names, for messages and tests

    def to_wire(self) -> dict[str, list[str]]:
        """A JSON- and pickle-friendly form for the instance process."""
        return {"files": sorted(self.files), "directories": list(self.directories)}


def import_world(project_dir: str) -> ImportWorld:
    """The files an instance of the project at ``project_dir`` may import, besides the
    standard library: the deployment package's and the runtime's."""
    root = Path(project_dir).resolve()
    requirements = _requirements(root / "requirements.txt")
    names = _closure([*RUNTIME_DISTRIBUTIONS, *requirements])
    files: set[str] = set()
    for name in sorted(names):
        if _canonical(name) == "chalice":
            continue  # the packager leaves it out; its runtime files are added below
        files.update(_module_files(metadata.distribution(name)))
    files.update(_chalice_runtime_files())
    files.update(str(root / name) for name in PACKAGED_FILES)
    directories = tuple(str(root / name) for name in PACKAGED_DIRECTORIES)
    return ImportWorld(frozenset(files), directories, tuple(sorted(names)))


def _canonical(name: str) -> str:
    # PEP 503 normalisation: "Typing_Extensions" and "typing-extensions" are one project.
    return re.sub(r"[-_.]+", "-", name).lower()


_REQUIREMENT = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(\[[^\]]*\])?")


def _requirements(path: Path, seen: frozenset[Path] = frozenset()) -> list[str]:
    """The requirements of a pip requirements file, as "name" or "name[extra,...]".

    Follows ``-r``/``--requirement`` includes; other options, comments and blank lines
    are skipped. A missing file means no requirements (Chalice packages none).
    """
    if not path.is_file() or path in seen:
        return []
    found: list[str] = []
    for raw in path.read_text().splitlines():
        line = raw.split(" #", 1)[0].strip()
        if not line or line.startswith("#"):
            continue
        include = re.match(r"^(?:-r|--requirement)[\s=]+(\S+)", line)
        if include:
            found += _requirements(path.parent / include.group(1), seen | {path})
            continue
        if line.startswith("-"):
            continue
        match = _REQUIREMENT.match(line)
        if match:
            found.append(match.group(1) + (match.group(2) or ""))
    return found


def _closure(requirements: Iterable[str]) -> set[str]:
    """Installed distribution names reached from ``requirements`` through Requires-Dist."""
    reached: set[str] = set()
    visited: set[tuple[str, frozenset[str]]] = set()
    pending = [_split_extras(r) for r in requirements]
    while pending:
        name, extras = pending.pop()
        try:
            distribution = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            log.warning("%s is a requirement but is not installed: no instance can import it", name)
            continue
        key = _canonical(distribution.metadata["Name"])
        if (key, extras) in visited:
            continue
        visited.add((key, extras))
        reached.add(key)
        for dependency in distribution.requires or []:
            spec, _, marker = dependency.partition(";")
            if marker.strip() and not marker_holds(marker, extras):
                continue
            pending.append(_split_extras(spec.strip()))
    return reached


def _split_extras(requirement: str) -> tuple[str, frozenset[str]]:
    match = _REQUIREMENT.match(requirement)
    if not match:
        raise ValueError(f"not a requirement: {requirement!r}")
    extras = match.group(2) or "[]"
    return match.group(1), frozenset(
        _canonical(e.strip()) for e in extras[1:-1].split(",") if e.strip()
    )


def _module_files(distribution: metadata.Distribution) -> Iterator[str]:
    """The distribution's importable files (modules, packages, extensions), resolved."""
    suffixes = tuple(all_suffixes())
    for file in distribution.files or []:
        if file.name.endswith(suffixes):
            yield os.path.realpath(str(distribution.locate_file(file)))


def _chalice_runtime_files() -> Iterator[str]:
    import chalice  # the local install the packager copies the runtime from

    package_dir = Path(chalice.__file__).resolve().parent
    for name in CHALICE_RUNTIME_FILES:
        yield str(package_dir / name)


# --- PEP 508 environment markers, for this interpreter -----------------------------


def marker_environment() -> dict[str, str]:
    """The values of PEP 508's marker variables for the running interpreter."""
    implementation = sys.implementation
    version = implementation.version
    implementation_version = f"{version.major}.{version.minor}.{version.micro}"
    if version.releaselevel != "final":
        implementation_version += version.releaselevel[0] + str(version.serial)
    return {
        "implementation_name": implementation.name,
        "implementation_version": implementation_version,
        "os_name": os.name,
        "platform_machine": platform.machine(),
        "platform_python_implementation": platform.python_implementation(),
        "platform_release": platform.release(),
        "platform_system": platform.system(),
        "platform_version": platform.version(),
        "python_full_version": platform.python_version(),
        "python_version": ".".join(platform.python_version_tuple()[:2]),
        "sys_platform": sys.platform,
    }


_MARKER_TOKEN = re.compile(
    r"""\s*(?:
        (?P<string>'[^']*'|"[^"]*")
      | (?P<op>===|==|!=|~=|<=|>=|<|>|\(|\))
      | (?P<word>[A-Za-z_][A-Za-z0-9_.]*)
    )""",
    re.VERBOSE,
)
_VERSION_VARIABLES = {"python_version", "python_full_version", "implementation_version"}


def marker_holds(
    marker: str, extras: frozenset[str], environment: dict[str, str] | None = None
) -> bool:
    """Whether a PEP 508 environment marker holds here with ``extras`` requested.

    Supports the grammar: comparisons (``== != < <= > >= ~= ===``, ``in``, ``not in``)
    of a variable and a quoted string, ``and``, ``or`` and parentheses. Versions compare
    numerically (release segments only); ``extra`` compares normalised names. Raises
    ``ValueError`` on a marker it cannot parse.
    """
    tokens = _tokenize(marker)
    env = marker_environment() if environment is None else environment
    parser = _MarkerParser(tokens, env, extras)
    value = parser.expression()
    if parser.position != len(tokens):
        raise ValueError(f"unexpected {tokens[parser.position][1]!r} in marker {marker!r}")
    return value


def _tokenize(marker: str) -> list[tuple[str, str]]:
    tokens: list[tuple[str, str]] = []
    position = 0
    text = marker.strip()
    while position < len(text):
        match = _MARKER_TOKEN.match(text, position)
        if not match or match.end() == position:
            raise ValueError(f"cannot parse marker {marker!r} at {text[position:]!r}")
        kind = match.lastgroup or ""
        value = match.group(kind)
        if kind == "word" and value == "not":
            kind = "op"  # only "not in" uses it
        tokens.append((kind, value))
        position = match.end()
    # "not" "in" -> "not in"
    merged: list[tuple[str, str]] = []
    for kind, value in tokens:
        if merged and merged[-1] == ("op", "not") and (kind, value) == ("word", "in"):
            merged[-1] = ("op", "not in")
        elif (kind, value) == ("word", "in"):
            merged.append(("op", "in"))
        else:
            merged.append((kind, value))
    return merged


class _MarkerParser:
    """Recursive descent over PEP 508's marker grammar (or binds looser than and)."""

    def __init__(
        self, tokens: list[tuple[str, str]], env: dict[str, str], extras: frozenset[str]
    ) -> None:
        self.tokens = tokens
        self.position = 0
        self.env = env
        self.extras = extras

    def _peek(self) -> tuple[str, str] | None:
        return self.tokens[self.position] if self.position < len(self.tokens) else None

    def _take(self) -> tuple[str, str]:
        token = self._peek()
        if token is None:
            raise ValueError("marker ends too early")
        self.position += 1
        return token

    def expression(self) -> bool:
        value = self._conjunction()
        while self._peek() == ("word", "or"):
            self._take()
            right = self._conjunction()
            value = value or right
        return value

    def _conjunction(self) -> bool:
        value = self._atom()
        while self._peek() == ("word", "and"):
            self._take()
            right = self._atom()
            value = value and right
        return value

    def _atom(self) -> bool:
        if self._peek() == ("op", "("):
            self._take()
            value = self.expression()
            if self._take() != ("op", ")"):
                raise ValueError("unbalanced parentheses in marker")
            return value
        left = self._take()
        kind, op = self._take()
        if kind != "op" or op in ("(", ")"):
            raise ValueError(f"expected a comparison, got {op!r}")
        right = self._take()
        return self._compare(left, op, right)

    def _compare(self, left: tuple[str, str], op: str, right: tuple[str, str]) -> bool:
        variable = left[1] if left[0] == "word" else right[1]
        a, b = _value(left, self.env), _value(right, self.env)
        if variable == "extra":
            # Requested extras are a set: "extra == 'x'" asks whether x is among them.
            literal = _canonical(b if left[0] == "word" else a)
            if op in ("==", "!="):
                return (literal in self.extras) == (op == "==")
            raise ValueError(f"cannot compare extra with {op!r}")
        if op == "in":
            return a in b
        if op == "not in":
            return a not in b
        if op == "===":
            return a == b
        if variable in _VERSION_VARIABLES:
            return _compare_versions(_version(a), op, _version(b))
        if op not in _ORDER:
            raise ValueError(f"cannot compare {variable} with {op!r}")
        return bool(_ORDER[op](a, b))


_ORDER = {
    "==": operator.eq,
    "!=": operator.ne,
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
}


def _compare_versions(a: tuple[int, ...], op: str, b: tuple[int, ...]) -> bool:
    width = max(len(a), len(b))
    padded_a, padded_b = a + (0,) * (width - len(a)), b + (0,) * (width - len(b))
    if op == "~=":  # compatible release: at least b, same release but b's last segment
        return padded_a >= padded_b and a[: len(b) - 1] == b[: len(b) - 1]
    if op not in _ORDER:
        raise ValueError(f"unknown comparison {op!r}")
    return bool(_ORDER[op](padded_a, padded_b))


def _value(token: tuple[str, str], env: dict[str, str]) -> str:
    kind, value = token
    if kind == "string":
        return value[1:-1]
    if kind == "word" and value == "extra":
        return ""  # compared as a set in _compare
    if kind == "word" and value in env:
        return env[value]
    raise ValueError(f"unknown marker variable {value!r}")


def _version(text: str) -> tuple[int, ...]:
    release = re.match(r"^\s*v?(\d+(?:\.\d+)*)", text)
    if not release:
        raise ValueError(f"not a version: {text!r}")
    return tuple(int(part) for part in release.group(1).split("."))
