"""Node.js for the tests' interop clients (see `peat_sync.bench.node_clients`): a failed
install fails the test that needs it, with npm's output."""

from __future__ import annotations

from pathlib import Path

import pytest

from peat_sync.bench import node_clients
from peat_sync.bench.node_clients import node_env

NODE = node_clients.node()

__all__ = ["NODE", "install_dependencies", "node_env"]


def install_dependencies(directory: Path) -> None:
    try:
        node_clients.install_dependencies(directory)
    except node_clients.NodeClientError as exc:
        pytest.fail(str(exc), pytrace=False)
