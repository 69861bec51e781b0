"""The image, built once per test run (tests/image/build.py); skipped where it cannot be
built, unless PEAT_REQUIRE_IMAGE is set (.ci/run sets it), which makes that a failure."""

from __future__ import annotations

import subprocess

import pytest

from tests.helpers.requirements import skip_unless_required
from tests.image.build import REQUIRE_IMAGE, Built, build, failure, missing


@pytest.fixture(scope="session")
def image() -> Built:
    reason = missing()
    if reason:
        skip_unless_required(reason, REQUIRE_IMAGE)
    try:
        return build()
    except subprocess.CalledProcessError as exc:
        pytest.fail(failure(exc), pytrace=False)
