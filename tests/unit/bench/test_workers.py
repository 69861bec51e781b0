"""The settings the bench gives its worker processes, and how writers share a load."""

from __future__ import annotations

import pytest

from peat_sync.bench.scenarios.context import writer_shares
from peat_sync.bench.workers import (
    CallerSettings,
    SubscriberSettings,
    WriterSettings,
    decode_settings,
    encode_settings,
)


@pytest.mark.parametrize(
    "settings",
    [
        SubscriberSettings(target="127.0.0.1:1"),
        SubscriberSettings(
            target="unix:///tmp/peat.sock",
            streams=4,
            collections=("bench", "other"),
            since=10,
            epoch="e",
            batched=True,
            latency=True,
            until=20,
            once=True,
            window=65_535,
        ),
        WriterSettings(kind="put", target="127.0.0.1:1", count=5),
        WriterSettings(kind="write", target="127.0.0.1:1", count=5, rate=2.5, wait_go=True),
        CallerSettings(target="127.0.0.1:1", count=1000),
        CallerSettings(target="127.0.0.1:1", count=10, turn=5, warmup=0, prefix="p-"),
    ],
)
def test_settings_reach_the_worker_as_they_were_made(
    settings: SubscriberSettings | WriterSettings | CallerSettings,
) -> None:
    """A worker's one argument is its settings as JSON: they come back equal."""
    assert decode_settings(encode_settings(settings)) == settings


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ('{"kind": "read", "target": "x"}', "no worker of kind 'read'"),
        ("[1]", "no worker of kind None"),
        ('{"kind": "put", "target": "x"}', "bad put worker settings"),
        ('{"kind": "calls", "target": "x"}', "bad calls worker settings"),
        ('{"kind": "subscribe", "target": "x", "collections": [], "speed": 1}', "speed"),
    ],
)
def test_settings_of_no_worker_are_refused(text: str, fragment: str) -> None:
    with pytest.raises(ValueError, match=fragment):
        decode_settings(text)


def test_writers_share_clients_count_and_rate() -> None:
    """20 clients are two processes of 10: each writes half the documents at half the rate,
    with numbers of its own, and waits for go."""
    settings = WriterSettings(kind="put", target="t", count=1001, clients=20, rate=1000.0)

    shares = writer_shares(settings)

    assert [share.clients for share in shares] == [10, 10]
    assert [share.count for share in shares] == [501, 500]
    assert [share.rate for share in shares] == [500.0, 500.0]
    assert [share.first for share in shares] == [0, 10**9]
    assert all(share.wait_go and share.kind == "put" for share in shares)
