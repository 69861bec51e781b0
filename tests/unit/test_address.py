"""Server addresses as users write them, shown back in canonical form."""

from __future__ import annotations

import pytest

from peat_sync.address import ListenAddress


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("tcp://127.0.0.1:50051", "tcp://127.0.0.1:50051"),
        ("localhost:9000", "tcp://localhost:9000"),
        ("tcp://[::1]:50051", "tcp://[::1]:50051"),
        ("unix:///run/peat.sock", "unix:///run/peat.sock"),
    ],
)
def test_listen_address_is_shown_in_canonical_form(text: str, shown: str) -> None:
    """The address prints back as a URL the user could pass again (IPv6 keeps its brackets)."""
    assert str(ListenAddress.parse(text)) == shown


@pytest.mark.parametrize(
    ("text", "target"),
    [
        ("127.0.0.1:50051", "127.0.0.1:50051"),
        ("tcp://[::1]:50051", "[::1]:50051"),
        ("unix:///run/peat.sock", "unix:///run/peat.sock"),
    ],
)
def test_grpcio_target_of_an_address(text: str, target: str) -> None:
    assert ListenAddress.parse(text).grpc_target == target
