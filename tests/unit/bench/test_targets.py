"""The targets table: the report's targets and the help's come from the same rows."""

from __future__ import annotations

from peat_sync.bench.report import ScenarioResult, targets
from peat_sync.bench.sizes import SCENARIO_SUMMARIES
from peat_sync.bench.targets import PEER_REDIS, TARGETS, full_run_figures


def test_each_target_names_a_scenario_and_has_a_key_of_its_own() -> None:
    assert all(spec.scenario in {*SCENARIO_SUMMARIES, PEER_REDIS} for spec in TARGETS)
    assert len({spec.key for spec in TARGETS}) == len(TARGETS)


def test_the_help_shows_each_bound_and_the_full_runs_figures() -> None:
    """Every description can be filled in with a full run's figures, and a bound reads as
    the goal with its unit, without decimals it does not have."""
    figures = full_run_figures()
    texts = {spec.key: spec.text(figures) for spec in TARGETS}

    assert texts["latency_p99"] == "put-to-delivery p99 at 1,000 puts/s, 10 subscribers"
    assert texts["latency_max_rate"].endswith("p99 <= 10 ms, 10 subscribers")
    assert "1,000 subscribers / 1" in texts["fanout_cpu_ratio"]
    bounds = {spec.key: spec.bound for spec in TARGETS}
    assert bounds["subscribe_vs_baseline"] == ">= 0.9 x"
    assert bounds["batched_replay"] == ">= 1,000,000 events/s"
    assert bounds["latency_p99"] == "<= 10 ms"
    assert bounds["latency_max_rate"] == ">= 1,000 puts/s"
    assert bounds["single_put_vs_status"] == "<= 1.5 x"
    assert bounds["single_get_vs_status"] == "<= 1.2 x"
    assert bounds["stalled_rss_growth"] == "<= 15 KiB"
    assert texts["shared_latency_p99"].endswith("p99 at 500 puts/s")
    assert bounds["shared_latency_p99"] == "<= 25 ms"
    assert bounds["shared_join_vs_replay"] == ">= 0.5 x"


def test_the_report_takes_each_target_from_its_row() -> None:
    """The report's target has the row's key, goal and unit, the figure the row names, and
    the description filled in with the figures of the run."""
    (spec,) = (spec for spec in TARGETS if spec.key == "latency_p99")
    figures = {"p99_ms": 12, "rate": 2000, "subscribers": 3}
    result = ScenarioResult("latency", 4, "", figures=figures)

    found, _ = targets({"latency": result})

    assert (found.key, found.goal, found.unit, found.at_least) == (
        spec.key,
        spec.goal,
        spec.unit,
        spec.at_least,
    )
    assert found.measured == 12.0
    assert found.text == "put-to-delivery p99 at 2,000 puts/s, 3 subscribers"
