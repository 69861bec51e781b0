"""What the scenarios of `peat-sync bench` share: the documents' timestamps, how load is
spread over processes, and the scenarios' names and sizes."""

from __future__ import annotations

import json

import pytest

from peat_sync.bench.messages import document, sent_at
from peat_sync.bench.scenarios import SCENARIOS
from peat_sync.bench.scenarios.context import split, spread
from peat_sync.bench.scenarios.latency import highest_rate, nice
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


def test_rates_are_rounded_to_two_significant_figures() -> None:
    rates = (600.0, 587.4, 1234.0, 12.4, 99.6, 0.3)
    assert [nice(rate) for rate in rates] == [600, 590, 1200, 12, 100, 1]


@pytest.mark.parametrize(
    ("threshold", "found", "tried"),
    [
        (1000, 1000, [1000]),  # met at the rate asked: nothing else is tried
        (170, 170, [1000, 600, 360, 220, 130, 170, 190]),
        (600, 600, [1000, 600, 770, 680]),
        (5, 0, [1000, 600, 360, 220, 130, 78, 47, 28]),  # none down to the floor of 20
    ],
)
def test_the_search_finds_the_highest_rate_that_meets_the_goal_in_few_steps(
    threshold: int, found: int, tried: list[int]
) -> None:
    """Down by 0.6 a step until a rate meets the goal, then two halvings of the gap above
    it: within 12% of the highest rate that meets it, every rate tried once."""
    calls: list[int] = []

    def meets(rate: int) -> bool:
        calls.append(rate)
        return rate <= threshold

    assert highest_rate(meets, 1000, 20) == found
    assert calls == tried
    assert found == 0 or found <= threshold < found / 0.88


def test_a_noisy_goal_still_ends_the_search() -> None:
    """A rate that meets the goal above one that misses it (a noisy p99) neither loops nor
    returns a rate that missed."""
    missed = {600, 220}
    calls: list[int] = []

    def meets(rate: int) -> bool:
        calls.append(rate)
        return rate <= 360 and rate not in missed

    found = highest_rate(meets, 1000, 20)

    assert found == 360
    assert found not in missed
    assert len(calls) == len(set(calls)) <= 8
