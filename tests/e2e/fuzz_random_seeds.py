"""`make fuzz`: schemathesis with random seeds against a local stack of its own.

Not part of `make test` (its file name is not a test module's, so only `make fuzz`,
which names it, collects it): random seeds find something new now and then, which is
what they are for, and a CI that fails at random would reject good work. `make test`
runs the same check on one fixed seed (tests/e2e/test_schemathesis_cli.py).

FUZZ_RUNS seeds (make fuzz: 3), or the one seed FUZZ_SEED names (make fuzz SEED=n).
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable
from pathlib import Path

from tests.e2e.conftest import QUOTAS_OFF, Stack
from tests.e2e.test_schemathesis_cli import SMALL_N, run_schemathesis

# How many random seeds to run, or the one seed to repeat.
FUZZ_RUNS = "FUZZ_RUNS"
FUZZ_SEED = "FUZZ_SEED"


def seeds() -> list[int]:
    given = os.environ.get(FUZZ_SEED)
    if given:
        return [int(given)]
    return [secrets.randbelow(2**32) for _ in range(int(os.environ.get(FUZZ_RUNS) or 3))]


def test_random_seeds_find_no_failure(make_stack: Callable[..., Stack], tmp_path: Path) -> None:
    stack = make_stack(environment={**SMALL_N, **QUOTAS_OFF})
    for seed in seeds():
        print(f"schemathesis --seed {seed}", flush=True)
        run_schemathesis(stack, tmp_path / f"seed-{seed}", seed)
