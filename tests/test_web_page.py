"""The live page's committed script must be exactly what its sources build (web/build.py)."""

from __future__ import annotations

import subprocess
import sys

from tests.helpers.paths import ROOT

# Under pytest's 120 s, with room for `npm ci` of a fresh clone.
BUILD_TIMEOUT = 110


def test_the_committed_page_script_is_what_its_sources_build() -> None:
    """Regenerates the protobuf code into a temporary directory, type-checks web/src and
    bundles it with the pinned esbuild: web/src/gen and peat_sync/web/page/page.js must come
    out byte for byte."""
    result = subprocess.run(
        [sys.executable, str(ROOT / "web" / "build.py"), "--check"],
        capture_output=True,
        text=True,
        timeout=BUILD_TIMEOUT,
        check=False,
    )
    assert result.returncode == 0, result.stderr + result.stdout
