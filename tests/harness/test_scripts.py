"""The measurement script of harness/ runs to the end at tiny sizes and prints every row of
its tables (its figures are not checked: at these sizes they are noise)."""

from __future__ import annotations

import subprocess
import sys

from peat_sync.bench.launcher import server_env as clean_env
from tests.helpers.paths import ROOT

# A few seconds each on an idle 2-core machine; the bound leaves room for a loaded one.
SCRIPT_TIMEOUT = 90.0
TINY = ("--events", "200", "--runs", "1")


def run_script(name: str, *args: str) -> subprocess.CompletedProcess[str]:
    """`python harness/NAME ARGS` from the repository root, as its docstring says to run it."""
    return subprocess.run(
        [sys.executable, f"harness/{name}", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=SCRIPT_TIMEOUT,
        env=clean_env(),
    )


def test_follower_rates_measures_every_client_and_every_source() -> None:
    result = run_script("follower_rates.py", *TINY)

    assert result.returncode == 0, result.stderr[-3000:]
    for row in (
        "bare grpclib stream",
        "ResilientSubscription",
        "Mirror",
        "peat-sync watch",
        "replay log",
        "store catch-up",
        "store snapshot",
    ):
        assert row in result.stdout, result.stdout


def test_follower_rates_explains_how_to_run_it() -> None:
    result = run_script("follower_rates.py", "--help")

    assert result.returncode == 0, result.stderr
    assert "python harness/follower_rates.py" in result.stdout
