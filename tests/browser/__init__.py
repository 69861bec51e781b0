"""The live page (peat_sync/web/page) in a real browser: headless Chromium, driven by Selenium.

The tests skip, saying why, where Debian's `chromium` or `chromium-driver` is missing, unless
PEAT_REQUIRE_BROWSER is set (as .ci/run sets it): then they fail.
"""

import pytest

# The asserts of the page helpers explain their failures too.
pytest.register_assert_rewrite("tests.browser.live_page")
