"""The listening socket: options that every accepted connection inherits."""

from __future__ import annotations

import socket

import pytest

from peat_sync.address import ListenAddress
from peat_sync.server.serve import _bind


@pytest.mark.skipif(not hasattr(socket, "TCP_USER_TIMEOUT"), reason="Linux only")
def test_accepted_connections_give_up_on_a_dead_peer_after_a_few_heartbeats() -> None:
    """Unacknowledged data (a heartbeat to a vanished peer) ends the connection after three
    heartbeat intervals, or 20 s, whichever is longer; small responses are not delayed."""
    listener, bound = _bind(ListenAddress(host="127.0.0.1", port=0), heartbeat_interval=10)
    with listener, socket.create_connection((bound.host, bound.port)):
        accepted, _ = listener.accept()
        with accepted:
            assert accepted.getsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT) == 30_000
            assert accepted.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
    listener, bound = _bind(ListenAddress(host="127.0.0.1", port=0), heartbeat_interval=0.5)
    with listener:
        assert listener.getsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT) == 20_000
