"""Figure 6: the cold start of the deployed entry point, and the deployment package.

The package is what ``make package`` builds (``infra.deploy.packaging``: ``chalice
package`` for the dev stage), unzipped as Lambda's task root. A fresh process then
imports ``app`` from it as Lambda's Python runtime does: the task root first on
``sys.path``, the stage's environment variables set, and no bytecode written (Lambda's
task root is read-only: a module the package does not ship compiled is compiled at every
cold start; ``make package`` ships unchecked-hash ``.pyc`` files for that reason). That is
held against a fresh process importing ``boto3`` alone (the runtime's own copy comes with
its bytecode, as the virtualenv's does here).

A third kind of process imports ``app`` from a copy of the task root with its bytecode
compiled again here (``compileall``): equal to the first when the shipped bytecode is used.

The package's contents are checked against the requirements files: every distribution
in it must be required (directly or not) by requirements.txt, so no test or dev
dependency (requirements-dev.txt) can be in it.
"""

from __future__ import annotations

import compileall
import json
import os
import re
import shutil
import subprocess
import sys
import zipfile
from collections import defaultdict
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from bench.sizes import Sizes
from bench.stack import progress
from bench.stats import Comparison, Figure, Series, Target, ms, p50
from infra.run import PROJECT_DIR, copy_app

IMPORT_TARGET = Target(high=1.3)
STAGE = "dev"
# What Chalice itself puts next to the app: its runtime module, not the CLI's dependencies.
CHALICE_RUNTIME = {"app.py", "chalicelib", "chalice"}
PACKAGE = (
    "from pathlib import Path\n"
    "from infra.deploy.access import Throttle\n"
    "from infra.deploy.packaging import package\n"
    "package({stage!r}, Throttle(), Path({project!r}), Path({out!r}))\n"
)
TIMED_IMPORT = (
    "import sys, time\n"
    "root = sys.argv[1]\n"
    "if root:\n"
    "    sys.path.insert(0, root)\n"
    "start = time.perf_counter()\n"
    "import {module}\n"
    "print(time.perf_counter() - start)\n"
)


@dataclass
class PackageReport:
    zip_bytes: int
    unpacked_bytes: int
    files: int
    # Top-level entry -> compressed bytes, largest first.
    parts: dict[str, int]
    distributions: list[str]  # "name version" of every *.dist-info in the package
    unexpected: list[str] = field(default_factory=list)  # not required by requirements.txt
    dev_only: list[str] = field(default_factory=list)  # requirements-dev.txt only


def build_package(workdir: Path) -> Path:
    """``make package``'s zip for the dev stage, built from a copy of the project."""
    project = copy_app(workdir / "package-project")
    out = workdir / "package-out"
    # In a process of its own: packaging imports the project's app.py with the stage's
    # environment variables written into os.environ, which must not leak into this one.
    subprocess.run(
        [sys.executable, "-c", PACKAGE.format(stage=STAGE, project=str(project), out=str(out))],
        cwd=PROJECT_DIR, check=True,
    )  # fmt: skip
    return out / "deployment.zip"


def requirement_names(path: Path) -> set[str]:
    names: set[str] = set()
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line and not line.startswith("-"):
            names.add(canonicalize_name(Requirement(line).name))
    return names


def closure(names: set[str]) -> set[str]:
    """``names`` and everything they require (installed distributions, markers applied)."""
    seen: set[str] = set()
    todo = list(names)
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        try:
            requires = metadata.requires(name) or []
        except metadata.PackageNotFoundError:
            continue
        for text in requires:
            requirement = Requirement(text)
            if requirement.marker is None or requirement.marker.evaluate({"extra": ""}):
                todo.append(canonicalize_name(requirement.name))
    return seen


def inspect_package(zip_path: Path) -> PackageReport:
    with zipfile.ZipFile(zip_path) as archive:
        infos = archive.infolist()
    parts: dict[str, int] = defaultdict(int)
    for info in infos:
        parts[info.filename.split("/", 1)[0]] += info.compress_size
    dist_infos = sorted(p for p in parts if p.endswith(".dist-info"))
    distributions = [d.removesuffix(".dist-info").replace("-", " ", 1) for d in dist_infos]
    runtime = closure(requirement_names(PROJECT_DIR / "requirements.txt"))
    dev = closure(requirement_names(PROJECT_DIR / "requirements-dev.txt")) - runtime
    names = {canonicalize_name(d.split(" ", 1)[0]) for d in distributions}
    return PackageReport(
        zip_bytes=zip_path.stat().st_size,
        unpacked_bytes=sum(i.file_size for i in infos),
        files=len(infos),
        parts=dict(sorted(parts.items(), key=lambda kv: -kv[1])),
        distributions=distributions,
        unexpected=sorted(names - runtime),
        dev_only=sorted(names & dev),
    )


def lambda_environment(task_root: Path) -> dict[str, str]:
    config = json.loads((PROJECT_DIR / ".chalice" / "config.json").read_text())
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "LAMBDA_TASK_ROOT": str(task_root),
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_REGION": "us-east-1",
        # Lambda's task root is read-only: nothing compiled at a cold start is kept.
        "PYTHONDONTWRITEBYTECODE": "1",
    }
    env.update(config["stages"][STAGE].get("environment_variables", {}))
    return env


def timed_import(module: str, root: Path | None, env: dict[str, str]) -> float:
    """Seconds a fresh interpreter takes to import ``module`` (task root first on the path)."""
    output = subprocess.run(
        [sys.executable, "-c", TIMED_IMPORT.format(module=module), str(root or "")],
        cwd=root or PROJECT_DIR, env=env, capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    return float(output.strip().splitlines()[-1])


def import_breakdown(root: Path, env: dict[str, str]) -> list[tuple[str, float]]:
    """One ``-X importtime`` import of app: self time summed per top-level package, ms."""
    result = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", TIMED_IMPORT.format(module="app"), str(root)],
        cwd=root, env=env, capture_output=True, text=True, check=True,
    )  # fmt: skip
    totals: dict[str, float] = defaultdict(float)
    for line in result.stderr.splitlines():
        match = re.match(r"import time:\s+(\d+) \|\s+\d+ \|\s+(\S+)", line)
        if match:
            totals[match.group(2).split(".")[0]] += int(match.group(1)) / 1000
    return sorted(totals.items(), key=lambda kv: -kv[1])


def figure_6(workdir: Path, sizes: Sizes) -> Figure:
    progress("figure 6: building the deployment package (make package, dev stage)")
    zip_path = build_package(workdir)
    package = inspect_package(zip_path)
    task_root = workdir / "task-root"
    with zipfile.ZipFile(zip_path) as archive:
        archive.extractall(task_root)
    compiled_root = workdir / "task-root-compiled"
    shutil.copytree(task_root, compiled_root)
    compileall.compile_dir(compiled_root, quiet=1, workers=1)
    env = lambda_environment(task_root)
    compiled_env = lambda_environment(compiled_root)

    app, boto3_, compiled = (
        Series(n, "s") for n in ("import_app", "import_boto3", "import_app_pyc")
    )
    progress(f"figure 6: cold imports, {sizes.import_rounds} of each")
    for _ in range(2):  # the page cache, not the first process, pays for reading files
        timed_import("app", task_root, env)
        timed_import("boto3", None, env)
    for _ in range(sizes.import_rounds):
        app.add(timed_import("app", task_root, env))
        boto3_.add(timed_import("boto3", None, env))
        compiled.add(timed_import("app", compiled_root, compiled_env))
    breakdown = import_breakdown(task_root, env)

    figure = Figure("6", "Cold start: importing the deployed entry point; the package")
    count = f"{app.count} / {boto3_.count}"
    figure.comparisons = [
        Comparison(
            "6", "cold import of app.py (from the package, as Lambda) vs import boto3",
            1000 * p50(app.samples), 1000 * p50(boto3_.samples), "ms", "import app",
            "import boto3", count, IMPORT_TARGET,
        ),
        Comparison(
            "6", "check: the package's bytecode compiled again here vs boto3 (same as above "
            "when the shipped bytecode is used)",
            1000 * p50(compiled.samples), 1000 * p50(boto3_.samples), "ms",
            "import app (.pyc)", "import boto3", f"{compiled.count} / {boto3_.count}",
        ),
        Comparison(
            "6", "deployment.zip: whole package vs its third-party part",
            package.zip_bytes / 1024, _third_party_kib(package), "KiB", "deployment.zip",
            "dependencies", "1 / 1",
            note="no test or dev dependency in it" if not (package.unexpected or package.dev_only)
            else f"UNEXPECTED: {', '.join(package.unexpected + package.dev_only)}",
        ),
    ]  # fmt: skip
    top = ", ".join(f"{name} {value:.1f}" for name, value in breakdown[:8])
    figure.notes.append(f"Where `import app` spends its time (self time per package, ms): {top}.")
    parts = ", ".join(
        f"`{name}` {size / 1024:.0f}" for name, size in list(package.parts.items())[:6]
    )
    figure.notes.append(
        f"deployment.zip: {package.zip_bytes / 1024:.0f} KiB ({package.unpacked_bytes / 1024:.0f}"
        f" KiB unpacked, {package.files} files); largest parts in KiB (compressed): {parts}."
    )
    figure.notes.append(
        f"Distributions in it: {', '.join(package.distributions)}; each is required by "
        "requirements.txt"
        + (
            "; none is a test or dev dependency (requirements-dev.txt)."
            if not (package.unexpected or package.dev_only)
            else f". Not required by requirements.txt: {', '.join(package.unexpected)}; "
            f"dev-only: {', '.join(package.dev_only)}."
        )
        + " boto3/botocore are not in it: Lambda's runtime provides them."
    )
    figure.series = [Series(s.name, "ms", ms(s.samples)) for s in (app, boto3_, compiled)]
    figure.series.append(Series("package_bytes", "bytes", [float(package.zip_bytes)]))
    return figure


def _third_party_kib(package: PackageReport) -> float:
    own = {"app.py", "chalicelib"}
    return sum(size for name, size in package.parts.items() if name not in own) / 1024
