"""`peat-sync bench --peer redis` end to end: Redis Streams on a local redis-server, measured
beside peat-sync in the same run.

It needs Debian's redis-server: the tests that start one skip, saying why, where it is
missing, unless PEAT_REQUIRE_REDIS is set (as .ci/run sets it): then they fail. As in
test_bench.py, no figure is compared with a speed.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from peat_sync.bench.redis_servers import RedisServerMissing, redis_server_binary
from peat_sync.bench.sizes import SCENARIO_SUMMARIES
from tests.e2e.test_bench import assert_measured, hidden, run_bench
from tests.helpers.cli import assert_one_line_error, peat_sync_command
from tests.helpers.requirements import skip_unless_required

# Set, the tests fail instead of skipping where redis-server is missing (.ci/run).
REQUIRE_REDIS = "PEAT_REQUIRE_REDIS"
WORKLOADS = ("one_at_a_time", "batches", "replay", "replay_batched")


@pytest.fixture
def redis_installed() -> None:
    try:
        redis_server_binary()
    except RedisServerMissing as exc:
        skip_unless_required(str(exc), REQUIRE_REDIS)


@pytest.mark.usefixtures("redis_installed")
def test_the_redis_peer_measures_four_workloads_beside_peat_sync(tmp_path: Path) -> None:
    """The peer's table, alone: each of the four workloads on Redis, then on peat-sync, with
    positive figures and peat-sync's ratio to Redis."""
    path = tmp_path / "bench.json"

    result = run_bench("--quick", "--peer", "redis", "--json", str(path))

    assert result.returncode == 0, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    document = json.loads(path.read_text())
    assert list(document["scenarios"]) == ["redis"]
    peer = document["scenarios"]["redis"]
    number = len(SCENARIO_SUMMARIES) + 1  # after the bench's last scenario
    assert peer["number"] == number
    labels = [row["label"] for row in peer["rows"]]
    assert labels == [
        "one write at a time: Redis XADD",
        "one write at a time: PutDocument",
        "batches of 1,000: Redis MULTI/EXEC of XADDs",
        "batches of 1,000: WriteDocuments",
        "replay: Redis XREAD COUNT 1000",
        "replay: Subscribe, one event per message",
        "replay, batched: Redis XRANGE COUNT 1000",
        "replay, batched: SubscribeBatched",
    ]
    assert_measured(peer["rows"])
    for row in peer["rows"]:
        assert row["rate"] > 0, row
        assert row["ratio"] > 0, row
        assert row["rss"] > 0, row  # both servers were started by the bench
    for row in peer["rows"][:4]:  # the writes, on either side, timed to their acknowledgement
        assert row["latency"]["p50"] > 0, row
    figures = peer["figures"]
    for name in WORKLOADS:
        assert figures[f"{name}_per_s"] > 0, name
        assert figures[f"redis_{name}_per_s"] > 0, name
        assert figures[f"{name}_ratio"] > 0, name
    assert figures["redis_version"] != "unknown"
    # Its target, one write at a time against Redis, is judged with the figure measured.
    assert list(document["targets"]) == ["put_vs_redis"]
    target = document["targets"]["put_vs_redis"]
    assert target["measured"] == figures["one_at_a_time_ratio"]
    assert target["met"] in (True, False)
    assert f"{number}. Redis Streams peer" in result.stdout
    assert " 1/1 redis: " in result.stderr
    assert "appendfsync always" in result.stdout


def test_the_redis_peer_without_redis_py_is_one_line(tmp_path: Path) -> None:
    """Without redis-py, --peer redis fails at once, naming the extra to install."""
    result = subprocess.run(
        [*peat_sync_command(), "bench", "--quick", "--peer", "redis"],
        capture_output=True,
        text=True,
        timeout=30,
        env=hidden(tmp_path, "redis"),
    )

    assert result.returncode == 1
    line = assert_one_line_error(result, "pip install 'peat-sync[bench]'")
    assert line.startswith("peat-sync bench: --peer redis: redis-py is not installed")
