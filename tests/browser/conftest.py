"""A headless Chromium for each test, with a fresh profile in the test's tmp_path."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from selenium.webdriver.chrome.webdriver import WebDriver

from tests.browser.live_page import REQUIRE_BROWSER, missing_browser, open_browser
from tests.helpers.requirements import skip_unless_required


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[WebDriver]:
    missing = missing_browser()
    if missing:
        reason = f"{' and '.join(missing)} not found: install Debian's chromium and chromium-driver"
        skip_unless_required(reason, REQUIRE_BROWSER)
    driver = open_browser(tmp_path / "chromium-profile")
    try:
        yield driver
    finally:
        driver.quit()
