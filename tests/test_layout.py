"""The layers of the package, checked: the client library loads no server, node or store; the
bridge is the only module that imports both trio and asyncio; only the CLI builds argument
parsers; `address` and `wire` import neither trio nor the node."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "peat_sync"
BRIDGE = PACKAGE / "bridge.py"
# What counts as each side of the bridge. trio_asyncio is both: only the bridge may use it.
TRIO_SIDE = {"trio", "trio_asyncio"}
ASYNCIO_SIDE = {
    "asyncio",
    "grpclib",
    "trio_asyncio",
    "betterproto2_grpclib",
    "nats",
    "connectrpc",
    "anycorn",
    "starlette",
}


def product_modules() -> list[Path]:
    return sorted(
        p for p in PACKAGE.rglob("*.py") if "generated" not in p.relative_to(PACKAGE).parts
    )


def imported_roots(path: Path) -> set[str]:
    """The top-level names of the modules `path` imports, at any depth of its code."""
    roots: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            roots.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            roots.add(node.module.split(".")[0])
    return roots


def loaded_after_import(*modules: str) -> set[str]:
    """The modules a fresh interpreter has loaded once it imported `modules`."""
    code = "; ".join(f"import {module}" for module in modules)
    code += "; import sys, json; print(json.dumps(sorted(sys.modules)))"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    return set(json.loads(result.stdout))


def test_the_client_library_loads_no_trio_node_or_store() -> None:
    loaded = loaded_after_import("peat_sync.client")
    assert "peat_sync.client" in loaded
    assert not {"trio", "trio_asyncio", "sqlite3", "_sqlite3"} & loaded
    assert not {m for m in loaded if m.startswith(("peat_sync.node", "peat_sync.store"))}
    assert not {m for m in loaded if m.startswith(("peat_sync.server", "peat_sync.cli."))}


def test_address_and_wire_import_neither_trio_nor_the_node() -> None:
    loaded = loaded_after_import("peat_sync.address", "peat_sync.wire")
    assert not {"trio", "trio_asyncio"} & loaded
    assert not {m for m in loaded if m.startswith(("peat_sync.node", "peat_sync.store"))}


def test_the_bridge_is_the_only_module_that_imports_both_trio_and_asyncio() -> None:
    both = [
        path.relative_to(PACKAGE).as_posix()
        for path in product_modules()
        if imported_roots(path) & TRIO_SIDE and imported_roots(path) & ASYNCIO_SIDE
    ]
    assert both == ["bridge.py"]


@pytest.mark.parametrize("side", ["trio", "asyncio"])
def test_the_bridge_check_sees_each_side(side: str) -> None:
    """The check above would pass vacuously if it saw no imports: the bridge has both."""
    roots = imported_roots(BRIDGE)
    assert roots & (TRIO_SIDE if side == "trio" else ASYNCIO_SIDE)


def test_only_the_cli_builds_argument_parsers() -> None:
    outside = [
        path.relative_to(PACKAGE).as_posix()
        for path in product_modules()
        if "argparse" in imported_roots(path) and path.relative_to(PACKAGE).parts[0] != "cli"
    ]
    assert outside == []
    assert "argparse" in imported_roots(PACKAGE / "cli" / "options.py")
