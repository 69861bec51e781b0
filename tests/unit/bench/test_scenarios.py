"""What the scenarios of `peat-sync bench` share: the documents' timestamps, how load is
spread over processes, and the scenarios' names and sizes."""

from __future__ import annotations

import json

from peat_sync.bench.messages import document, sent_at
from peat_sync.bench.scenarios import SCENARIOS
from peat_sync.bench.scenarios.context import split, spread
from peat_sync.bench.sizes import QUICK, SCENARIO_SUMMARIES, Sizes


def test_bench_documents_carry_the_writers_clock() -> None:
    """A subscriber reads the writer's timestamp back from the document (valid JSON);
    other documents have none."""
    text = document(42, 123_456_789_012)

    assert sent_at(text) == 123_456_789_012
    assert json.loads(text)["n"] == 42
    assert sent_at('{"a": 1}') is None
    assert sent_at('{"t":"x","n":1}') is None


def test_load_is_shared_evenly() -> None:
    """Streams and clients are spread over as few processes as hold the per-process count,
    as evenly as whole numbers allow."""
    assert split(10, 3) == [4, 3, 3]
    assert spread(100, 10) == [10] * 10
    assert spread(25, 10) == [9, 8, 8]
    assert spread(1, 10) == [1]


def test_the_scenarios_and_their_summaries_agree() -> None:
    """The command line's list of scenarios (which must not import grpcio) names the same
    scenarios, in the same order, as the functions that run them; --quick is smaller."""
    assert list(SCENARIO_SUMMARIES) == list(SCENARIOS)
    assert QUICK.runs == 1
    assert QUICK.put_count < Sizes().put_count
    assert QUICK.idle_subscribers < Sizes().idle_subscribers
    assert QUICK.shared_documents < Sizes().shared_documents
