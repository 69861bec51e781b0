"""A headless Chromium for each test, with a fresh profile in the test's tmp_path."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from selenium.webdriver.chrome.webdriver import WebDriver

from tests.browser.live_page import REQUIRE_BROWSER, missing_browser, open_browser


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[WebDriver]:
    missing = missing_browser()
    if missing:
        reason = f"{' and '.join(missing)} not found: install Debian's chromium and chromium-driver"
        if os.environ.get(REQUIRE_BROWSER):
            pytest.fail(f"{reason} ({REQUIRE_BROWSER} is set)", pytrace=False)
        pytest.skip(reason)
    driver = open_browser(tmp_path / "chromium-profile")
    try:
        yield driver
    finally:
        driver.quit()
