"""The image, built once per test run (tests/image/build.py); skipped where it cannot be
built, unless PEAT_REQUIRE_IMAGE is set (.ci/run sets it), which makes that a failure."""

from __future__ import annotations

import os
import subprocess

import pytest

from tests.image.build import REQUIRE_IMAGE, Built, build, failure, missing


@pytest.fixture(scope="session")
def image() -> Built:
    reason = missing()
    if reason:
        if os.environ.get(REQUIRE_IMAGE):
            pytest.fail(f"{reason} ({REQUIRE_IMAGE} is set)", pytrace=False)
        pytest.skip(reason)
    try:
        return build()
    except subprocess.CalledProcessError as exc:
        pytest.fail(failure(exc), pytrace=False)
