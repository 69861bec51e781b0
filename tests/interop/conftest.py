"""The Node.js clients of interop/, each installed once per session by `npm ci` from its
committed lock file (tests/helpers/node_js.py). Running them is in tests/helpers/grpc_js.py
and tests/helpers/connect_node.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers.connect_node import CONNECT_NODE_CLIENT, CONNECT_NODE_DIR
from tests.helpers.grpc_js import GRPC_JS_CLIENT, GRPC_JS_DIR
from tests.helpers.node_js import install_dependencies

# The contract's asserts are in a plain module: have pytest explain their failures too.
pytest.register_assert_rewrite("tests.interop.contract")


@pytest.fixture(scope="session")
def grpc_js() -> Path:
    """interop/grpc-js/client.js, with its dependencies installed."""
    install_dependencies(GRPC_JS_DIR)
    return GRPC_JS_CLIENT


@pytest.fixture(scope="session")
def connect_node() -> Path:
    """interop/connect-node/client.js, with its dependencies installed (the code protoc-gen-es
    generated is committed)."""
    install_dependencies(CONNECT_NODE_DIR)
    return CONNECT_NODE_CLIENT
