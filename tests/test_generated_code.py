"""The committed generated code must be exactly what the compiler makes of the proto."""

from __future__ import annotations

import subprocess
import sys

from tests.helpers.paths import ROOT


def test_regenerating_the_proto_gives_identical_files() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "proto" / "generate.py"), "--check"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
