"""The `peat-sync` command as users run it: to completion, with a clean environment, and
what its help and its errors look like."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from peat_sync.bench.launcher import server_env as clean_env

CLI_TIMEOUT = 30.0


def peat_sync_command() -> list[str]:
    """The installed `peat-sync` console script of this environment."""
    script = Path(sys.executable).with_name("peat-sync")
    if script.exists():
        return [str(script)]
    return [sys.executable, "-m", "peat_sync"]


def run_cli(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """Run `peat-sync ARGS` to completion, with only `env` as PEAT_SIDECAR_* variables."""
    return subprocess.run(
        [*peat_sync_command(), *args],
        capture_output=True,
        text=True,
        timeout=CLI_TIMEOUT,
        env=clean_env(**env),
    )


def assert_one_line_error(result: subprocess.CompletedProcess[str], *fragments: str) -> str:
    """The output is one line, no traceback, holding every fragment; returns the line."""
    output = result.stdout + result.stderr
    assert "Traceback" not in output, output
    lines = output.strip().splitlines()
    assert len(lines) == 1, output
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


def help_entries(text: str) -> dict[str, str]:
    """Each option's entry in argparse help, keyed by flag, whitespace collapsed."""
    entries: dict[str, str] = {}
    flag = None
    for line in text.splitlines():
        match = re.match(r"  (-h, --help|--[a-z-]+)\b", line)
        if match:
            flag = match[1].split(", ")[-1]
            entries[flag] = ""
        elif flag is not None and not line.startswith("  "):
            flag = None
        if flag is not None:
            entries[flag] = " ".join([*entries[flag].split(), *line.split()])
    return entries
