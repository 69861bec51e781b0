"""Tests that need something pip cannot install (a browser, redis-server, root and podman):
where it is missing they skip, saying why, unless their PEAT_REQUIRE_* variable is set (as
.ci/run sets it), which makes that a failure."""

from __future__ import annotations

import os
from typing import NoReturn

import pytest


def skip_unless_required(reason: str, variable: str) -> NoReturn:
    """Skip the test for `reason`; fail it instead when `variable` is set."""
    if os.environ.get(variable):
        pytest.fail(f"{reason} ({variable} is set)", pytrace=False)
    pytest.skip(reason)
