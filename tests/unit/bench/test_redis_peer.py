"""The Redis peer of `peat-sync bench`: where its redis-server comes from, and the one line
it says before it starts anything when there is none."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from peat_sync.bench import redis_servers, run
from peat_sync.bench.redis_servers import RedisServerMissing, redis_server_binary
from peat_sync.bench.sizes import QUICK


def test_redis_server_is_found_on_path_first(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    binary = tmp_path / "redis-server"
    binary.write_text("#!/bin/sh\n")
    binary.chmod(0o755)
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr(redis_servers, "DEBIAN_BINARY", tmp_path / "elsewhere")

    assert redis_server_binary() == str(binary)


def test_redis_server_is_found_where_debian_puts_it_when_path_lacks_it(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    debian = tmp_path / "usr-bin-redis-server"
    debian.write_text("#!/bin/sh\n")
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    monkeypatch.setattr(redis_servers, "DEBIAN_BINARY", debian)

    assert redis_server_binary() == str(debian)


def test_no_redis_server_says_which_package_brings_it(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr(redis_servers, "DEBIAN_BINARY", tmp_path / "none")

    with pytest.raises(RedisServerMissing, match="apt-get install redis-server"):
        redis_server_binary()


def no_redis_server() -> str:
    raise RedisServerMissing(
        "redis-server is not installed: `apt-get install redis-server` brings it"
    )


def test_the_redis_peer_without_redis_server_is_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """--peer redis fails at once, before any scenario runs, when there is no redis-server to
    start, and says how to get one."""
    monkeypatch.setattr(run, "redis_server_binary", no_redis_server)

    code = run.run_bench(
        addr=None,
        scenarios=["idle"],
        sizes=QUICK,
        json_path=None,
        plot_path=None,
        quick=True,
        peer="redis",
    )

    assert code == run.EXIT_FAILED
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.splitlines() == [
        "peat-sync bench: --peer redis: redis-server is not installed:"
        " `apt-get install redis-server` brings it"
    ]


@pytest.mark.parametrize(
    ("scenarios", "steps"),
    [([], ["redis"]), (["batched", "replay"], ["replay", "batched", "redis"])],
)
def test_the_redis_peer_runs_alone_or_after_the_scenarios_given(
    monkeypatch: pytest.MonkeyPatch, scenarios: list[str], steps: list[str]
) -> None:
    """With no --scenario, --peer redis runs the peer alone; with some, after them, in the
    bench's order."""
    ran: list[list[str]] = []

    def record(sizes: Any, target: Any, planned: dict[str, Any], *rest: Any) -> int:
        ran.append(list(planned))
        return run.EXIT_OK

    monkeypatch.setattr(run, "_redis_problem", lambda: None)
    monkeypatch.setattr(run, "_run", record)

    code = run.run_bench(
        addr=None,
        scenarios=scenarios,
        sizes=QUICK,
        json_path=None,
        plot_path=None,
        quick=True,
        peer="redis",
    )

    assert code == run.EXIT_OK
    assert ran == [steps]
