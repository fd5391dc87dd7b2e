"""Unit tests for infra.event_source.deployment: what an instance may import."""

from __future__ import annotations

from pathlib import Path

import chalice
import pytest

from infra.event_source.deployment import (
    RUNTIME_DISTRIBUTIONS,
    _closure,
    _requirements,
    import_world,
    marker_environment,
    marker_holds,
)

PY311_LINUX = {**marker_environment(), "python_version": "3.11", "python_full_version": "3.11.7",
               "sys_platform": "linux", "platform_python_implementation": "CPython"}  # fmt: skip


def test_requirements_files_are_read_as_pip_reads_them(tmp_path: Path) -> None:
    (tmp_path / "base.txt").write_text("jmespath>=1.0  # a comment\n")
    (tmp_path / "requirements.txt").write_text(
        "# runtime\n"
        "-r base.txt\n"
        "--index-url https://example.invalid/simple\n"
        "\n"
        "Requests[socks]==2.0 ; python_version >= '3.8'\n"
        "typing_extensions\n"
    )
    assert _requirements(tmp_path / "requirements.txt") == [
        "jmespath",
        "Requests[socks]",
        "typing_extensions",
    ]
    assert _requirements(tmp_path / "missing.txt") == []


def test_lambdas_runtime_is_boto3_and_what_it_depends_on() -> None:
    assert RUNTIME_DISTRIBUTIONS == ("boto3",)
    assert _closure(RUNTIME_DISTRIBUTIONS) == {
        "boto3", "botocore", "s3transfer", "jmespath", "python-dateutil", "six", "urllib3",
    }  # fmt: skip


def test_requested_extras_bring_their_dependencies() -> None:
    plain, server = _closure(["moto"]), _closure(["moto[server]"])
    assert "flask" in server and "flask" not in plain  # moto's "server" extra needs Flask
    assert {"requests", "urllib3", "idna", "certifi", "charset-normalizer"} <= _closure(
        ["requests"]
    )


@pytest.mark.parametrize(
    ("marker", "extras", "holds"),
    [
        ("extra == 'all'", set(), False),
        ("extra == 'all'", {"all"}, True),
        ('extra == "Crt"', {"crt"}, True),  # extras compare normalised
        ("(platform_python_implementation == 'CPython') and extra == 'brotli'", {"brotli"}, True),
        ("(platform_python_implementation != 'CPython') and extra == 'brotli'", {"brotli"}, False),
        ("(python_version < '3.14') and extra == 'zstd'", {"zstd"}, True),
        ("python_version < '3.8'", set(), False),
        ("python_version >= '3.8' and python_version < '3.12'", set(), True),
        ("python_full_version >= '3.11.0'", set(), True),
        ("python_version == '3.11'", set(), True),
        ("python_version ~= '3.10'", set(), True),
        ("python_version ~= '3.12'", set(), False),
        ("sys_platform == 'win32' or sys_platform == 'linux'", set(), True),
        ("'linux' in sys_platform", set(), True),
        ("sys_platform not in 'win32 cygwin'", set(), True),
        ("os_name == 'nt' and (python_version < '3.8' or extra == 'x')", {"x"}, False),
    ],
)
def test_environment_markers(marker: str, extras: set[str], holds: bool) -> None:
    assert marker_holds(marker, frozenset(extras), PY311_LINUX) is holds


@pytest.mark.parametrize(
    "marker",
    ["python_version <", "foo == '1'", "(python_version < '3'", "python_version < '3' and"],
)
def test_a_marker_that_cannot_be_parsed_is_an_error(marker: str) -> None:
    with pytest.raises(ValueError):
        marker_holds(marker, frozenset(), PY311_LINUX)


def test_the_world_of_a_project(tmp_path: Path) -> None:
    project = tmp_path / "project"
    project.mkdir()
    (project / "requirements.txt").write_text("requests\n")

    world = import_world(str(project))

    assert {"requests", "boto3", "botocore"} <= set(world.distributions)
    assert "moto" not in world.distributions and "chalice" not in world.distributions
    chalice_dir = Path(chalice.__file__).resolve().parent
    # Chalice's packager ships two files of it, and nothing else of chalice.
    assert {f for f in world.files if f.startswith(str(chalice_dir))} == {
        str(chalice_dir / "__init__.py"),
        str(chalice_dir / "app.py"),
    }
    assert str(project.resolve() / "app.py") in world.files
    assert world.directories == (
        str(project.resolve() / "chalicelib"),
        str(project.resolve() / "vendor"),
    )
    assert any(f.endswith("/requests/__init__.py") for f in world.files)
    assert not any("/moto/" in f or "/pytest/" in f for f in world.files)
