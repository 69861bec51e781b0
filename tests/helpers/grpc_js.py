"""The grpc-js client of interop/grpc-js: running it, one operation or one stream per
process, on the node of tests/helpers/node_js.py."""

from __future__ import annotations

import json
import subprocess
from typing import Any

from tests.helpers.clients import CallFailed, RpcFailure
from tests.helpers.node_js import NODE, node_env
from tests.helpers.paths import ROOT

GRPC_JS_DIR = ROOT / "interop" / "grpc-js"
GRPC_JS_CLIENT = GRPC_JS_DIR / "client.js"
# The deadline the client sets on its call, and the longer one of the process around it.
CALL_DEADLINE = 10.0
PROCESS_TIMEOUT = CALL_DEADLINE + 10.0


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
