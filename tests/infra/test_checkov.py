"""The infrastructure scanner: checkov's only failures are the baseline's accepted findings.

checkov (pinned in requirements-checkov.txt, its own virtualenv) scans the state template,
the operations template and `make package`'s SAM template of each stage, and prod's again
with a customer-managed KMS key named. A failed check that no entry of
infra/checkov-baseline.yaml covers fails here; so does an entry that covers nothing (the
gap it excused is closed: delete it), a resource the baseline says must pass a check, or,
in the package with a key, a failed check whose entry is accepted only without one
(``without_key``).
"""

from __future__ import annotations

import json
import os
import subprocess
from dataclasses import dataclass, replace
from fnmatch import fnmatch
from pathlib import Path
from typing import Any

import pytest
import yaml

from infra import operations, stack
from tests.infra.conftest import KEYED_STAGE, PACKAGED_STAGES
from tests.infra.harness import CHECKOV

BASELINE = stack.PROJECT_DIR / "infra" / "checkov-baseline.yaml"


@dataclass(frozen=True)
class Finding:
    check: str
    resource: str  # "<Type>.<LogicalId>", as checkov names it
    file: str
    keyed: bool = False  # found in the package with a key named


def scan(files: list[Path]) -> tuple[list[Finding], dict[str, dict[str, int]]]:
    """checkov's failed checks over ``files``, and its passed/failed counts per file."""
    command = [str(CHECKOV / "bin" / "checkov"), "--framework", "cloudformation", "--output"]
    command += ["json", "--skip-download"]
    for path in files:
        command += ["--file", str(path)]
    # Offline: no fetching of Prisma Cloud's guideline mappings, no version check.
    env = {**os.environ, "BC_SKIP_MAPPING": "TRUE", "CHECKOV_RUN_SCA_PACKAGE_SCAN_V2": "false"}
    result = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    assert result.returncode in (0, 1), result.stderr  # 1: some check failed
    reports: Any = json.loads(result.stdout)
    reports = reports if isinstance(reports, list) else [reports]
    findings: list[Finding] = []
    counts: dict[str, dict[str, int]] = {}
    for report in reports:
        for outcome in ("passed", "failed"):
            for check in report["results"][f"{outcome}_checks"]:
                per_file = counts.setdefault(check["file_abs_path"], {"passed": 0, "failed": 0})
                per_file[outcome] += 1
                if outcome == "failed":
                    findings.append(
                        Finding(check["check_id"], check["resource"], check["file_abs_path"])
                    )
    return findings, counts


@pytest.fixture(scope="module")
def scanned(
    packaged: dict[str, Path], packaged_with_key: Path
) -> tuple[list[Finding], dict[str, dict[str, int]]]:
    keyed = packaged_with_key / "sam.json"
    files = [stack.TEMPLATE, operations.TEMPLATE, keyed]
    files += [packaged[stage] / "sam.json" for stage in PACKAGED_STAGES]
    findings, counts = scan(files)
    assert {str(f) for f in files} <= set(counts), counts  # every file was scanned
    findings = [replace(f, keyed=f.file == str(keyed)) for f in findings]
    for path, figures in sorted(counts.items()):  # shown with -s / in the report
        name = "/".join(Path(path).parts[-2:])
        if path == str(keyed):
            name = f"{KEYED_STAGE}/sam.json, key"
        print(f"checkov {name:<24} {figures['passed']} passed, {figures['failed']} failed")
    return findings, counts


def baseline() -> list[dict[str, Any]]:
    entries = yaml.safe_load(BASELINE.read_text())
    for entry in entries:
        assert set(entry) <= {"check", "resources", "except", "without_key", "why"}, entry
        assert entry["why"].strip() and entry["resources"], entry
    return list(entries)


def covers(entry: dict[str, Any], finding: Finding) -> bool:
    """Whether ``entry`` accepts ``finding``: never, in the package with a key, for an
    entry accepted only without one."""
    if entry.get("without_key") and finding.keyed:
        return False
    return entry["check"] == finding.check and any(
        fnmatch(finding.resource, pattern) for pattern in entry["resources"]
    )


def test_every_finding_is_an_accepted_one(scanned: tuple[list[Finding], Any]) -> None:
    findings, _ = scanned
    entries = baseline()
    new = [f for f in findings if not any(covers(e, f) for e in entries)]
    assert new == [], "new checkov findings: fix them, or add them with a reason to " + str(
        BASELINE
    )


def test_no_resource_fails_a_check_the_baseline_says_it_passes(
    scanned: tuple[list[Finding], Any],
) -> None:
    findings, _ = scanned
    broken = [
        (entry["check"], f.resource)
        for entry in baseline()
        for f in findings
        if f.check == entry["check"]
        and any(fnmatch(f.resource, pattern) for pattern in entry.get("except", []))
    ]
    assert broken == []


def test_every_baseline_entry_still_excuses_something(scanned: tuple[list[Finding], Any]) -> None:
    findings, _ = scanned
    stale = [e["check"] for e in baseline() if not any(covers(e, f) for f in findings)]
    assert stale == [], f"delete these entries from {BASELINE}: their findings are gone"


def test_a_package_with_a_key_passes_every_encryption_check(
    scanned: tuple[list[Finding], Any],
) -> None:
    """The checks the baseline accepts only without a key (the table's, the queues', the
    topic's, the log group's and the functions' environment's encryption) all pass."""
    findings, _ = scanned
    encryption_checks = {e["check"] for e in baseline() if e.get("without_key")}
    assert {"CKV_AWS_27", "CKV_AWS_119", "CKV_AWS_26", "CKV_AWS_158", "CKV_AWS_173"} <= (
        encryption_checks
    )
    failed = {f.check for f in findings if f.keyed}
    assert failed & encryption_checks == set()
    keyless = {f.check for f in findings if not f.keyed}
    assert encryption_checks <= keyless  # accepted there, so each entry still excuses something


def test_the_scan_can_fail(tmp_path: Path) -> None:
    """The scanner really runs the checks: an unencrypted, unbacked-up table fails them."""
    template = tmp_path / "bare.yaml"
    template.write_text(
        "Resources:\n"
        "  Bare:\n"
        "    Type: AWS::DynamoDB::Table\n"
        "    Properties:\n"
        "      BillingMode: PAY_PER_REQUEST\n"
        "      KeySchema: [{AttributeName: k, KeyType: HASH}]\n"
        "      AttributeDefinitions: [{AttributeName: k, AttributeType: S}]\n"
    )
    findings, _ = scan([template])
    assert {"CKV_AWS_28", "CKV_AWS_119"} <= {f.check for f in findings}
