"""What the tests share, one role per module; conftest files hold only fixtures.

pytest rewrites the asserts of test modules and conftest files only. These modules are
registered here, before any of them is imported, so that a failed assert in a helper explains
itself as one in a test does.
"""

import pkgutil

import pytest

pytest.register_assert_rewrite(
    *(f"{__name__}.{module.name}" for module in pkgutil.iter_modules(__path__))
)
