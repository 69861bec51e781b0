"""The soak (`python -m harness.soak`): a short soak under kills must end without a
violation, having gone through the faults it is about (kills, catch-ups, RESYNCs); and the
checker must catch each kind of violation it exists for, fed by hand."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

from harness.soak.checker import (
    StoredDocument,
    copy_violations,
    feed_violations,
    store_violations,
)
from harness.soak.feed import FeedRecord
from harness.soak.ledger import Ledger
from peat_sync.bench.launcher import server_env as clean_env
from peat_sync.client import ChangeType, Event
from tests.helpers.cli import help_entries
from tests.helpers.paths import ROOT

# About 10-20 s on an idle 2-core machine; the bound leaves room for a loaded one.
SOAK_TIMEOUT = 110.0
# `--help` and usage errors: no server, only the imports.
COMMAND_TIMEOUT = 30.0
SOAK = [sys.executable, "-m", "harness.soak"]
COLLECTIONS = ["alpha", "bravo"]


def run_soak(tmp_path: Path, *args: str) -> tuple[subprocess.CompletedProcess[str], Any]:
    """`python -m harness.soak ARGS --json PATH` from the repository root, in a session of its
    own, so that its server goes with it if the deadline passes; the result and the JSON
    counts."""
    path = tmp_path / "soak.json"
    process = subprocess.Popen(
        [*SOAK, *args, "--json", str(path)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=clean_env(),
        start_new_session=True,
    )
    try:
        stdout, stderr = process.communicate(timeout=SOAK_TIMEOUT)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.communicate()
    result = subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)
    return result, json.loads(path.read_text()) if path.exists() else None


def test_short_soak_under_kills_has_no_violation(tmp_path: Path) -> None:
    """Writers, stalling and reopening subscribers and three SIGKILLs: every acknowledged
    write is stored, every copy equals the store, every feed accounts for every write; and
    the run did meet the faults (kills, catch-ups, a RESYNC, ambiguous writes)."""
    result, counts = run_soak(tmp_path, "--events", "20000", "--kills", "3", "--fault-gap", "1")

    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    assert counts["violations"] == 0, counts["violation_list"]
    assert counts["writes_acked"] >= 20000
    assert counts["kills_survived"] == 3
    assert counts["catch_ups"] > 0
    assert counts["resyncs"] > 0
    assert counts["reconnections"] > 0
    assert counts["reopens"] > 0
    assert counts["stalls"] > 0
    assert counts["events_received"] > counts["head_sequence"]
    assert "writes acked" in result.stderr  # progress
    assert "violations         0" in result.stdout


def run_command(*args: str) -> subprocess.CompletedProcess[str]:
    """`python -m harness.soak ARGS` from the repository root, for what returns at once."""
    return subprocess.run(
        [*SOAK, *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=COMMAND_TIMEOUT,
        env=clean_env(),
    )


def test_help_explains_every_option() -> None:
    result = run_command("--help")

    assert result.returncode == 0, result.stderr
    entries = help_entries(result.stdout)
    for flag in ("--events", "--writers", "--subscribers", "--kills", "--kill-every", "--json"):
        assert len(entries[flag]) > len(flag) + 20, (flag, entries[flag])
    assert "exit status" in result.stdout


def test_bad_json_directory_is_a_usage_error(tmp_path: Path) -> None:
    result = run_command("--events", "10", "--json", str(tmp_path / "none" / "x.json"))

    assert result.returncode == 2
    assert "no directory" in result.stderr


# The checker, fed by hand ------------------------------------------------------------------


def ledger_with(*writes: tuple[int, str, str, str | None]) -> Ledger:
    """A ledger of acknowledged writes `(sequence, collection, doc_id, json_data)`."""
    ledger = Ledger(COLLECTIONS)
    for sequence, collection, doc_id, json_data in writes:
        ledger.record_acked([(collection, doc_id, json_data)], [sequence], sent_at=float(sequence))
    return ledger


def event(
    kind: ChangeType,
    sequence: int,
    collection: str = "",
    doc_id: str = "",
    json_data: str | None = None,
) -> Event:
    return Event(kind, sequence, collection, doc_id, json_data)


def test_checker_accepts_a_store_that_holds_every_acknowledged_write() -> None:
    ledger = ledger_with(
        (1, "alpha", "a", '{"v":1}'),
        (2, "alpha", "a", '{"v":2}'),
        (3, "bravo", "b", '{"v":3}'),
        (4, "bravo", "b", None),
    )

    assert store_violations(ledger, {"alpha": {"a": StoredDocument('{"v":2}', 2)}}) == []


def test_checker_catches_a_missing_or_stale_or_foreign_document() -> None:
    ledger = ledger_with((1, "alpha", "a", '{"v":1}'), (2, "alpha", "a", '{"v":2}'))

    missing = store_violations(ledger, {})
    stale = store_violations(ledger, {"alpha": {"a": StoredDocument('{"v":1}', 1)}})
    different = store_violations(ledger, {"alpha": {"a": StoredDocument('{"v":9}', 2)}})
    foreign = store_violations(
        ledger, {"alpha": {"a": StoredDocument('{"v":2}', 2), "z": StoredDocument("{}", 3)}}
    )

    assert missing == ["store: alpha/a acked at 2 is missing"]
    assert stale
    assert "older than its write acked at 2" in stale[0]
    assert different
    assert "differs" in different[0]
    assert foreign
    assert "alpha/z" in foreign[0]


def test_checker_lets_an_ambiguous_write_supersede_an_acknowledged_one() -> None:
    ledger = ledger_with((1, "alpha", "a", '{"v":1}'))
    ledger.record_ambiguous([("alpha", "a", None)], failed_at=5.0)
    ledger.record_ambiguous([("alpha", "b", '{"v":7}')], failed_at=6.0)

    assert store_violations(ledger, {"alpha": {"b": StoredDocument('{"v":7}', 3)}}) == []


def test_checker_catches_a_copy_unlike_the_store() -> None:
    store = {"alpha": {"a": StoredDocument('{"v":2}', 2)}, "bravo": {}}

    assert copy_violations("s", ["alpha"], {"alpha": {"a": {"v": 2}}}, store) == []
    assert copy_violations("s", [], {"alpha": {"a": {"v": 2}}}, store) == []
    assert copy_violations("s", ["alpha"], {"alpha": {"a": {"v": 1}}}, store)
    assert copy_violations("s", ["bravo"], {"bravo": {"x": {}}}, store)


def feed(collections: list[str], ledger: Ledger, *events: Event) -> list[str]:
    record = FeedRecord("s", collections)
    for each in events:
        record.observe(each, ledger)
    return feed_violations([record], ledger)


def test_checker_explains_a_filtered_feed_gap_and_catches_a_lost_event() -> None:
    ledger = ledger_with(
        (1, "alpha", "a", '{"v":1}'), (2, "bravo", "b", '{"v":2}'), (3, "alpha", "a", '{"v":3}')
    )
    opening = [event(ChangeType.SNAPSHOT_BEGIN, 0), event(ChangeType.CATCH_UP_END, 0)]
    first = event(ChangeType.UPSERT, 1, "alpha", "a", '{"v":1}')
    third = event(ChangeType.UPSERT, 3, "alpha", "a", '{"v":3}')

    assert feed(["alpha"], ledger, *opening, first, third) == []
    lost = feed([], ledger, *opening, first, third)
    assert lost
    assert "1 acknowledged write(s)" in lost[0]
    assert "(1, 2]" in lost[0]
    skipped = feed(["alpha"], ledger, *opening, third)
    assert skipped
    assert "(0, 2]" in skipped[0]
    by_heartbeat = feed(["alpha"], ledger, *opening, event(ChangeType.HEARTBEAT, 3))
    assert by_heartbeat
    assert "(0, 3]" in by_heartbeat[0]


def test_checker_excuses_what_a_catch_up_or_resync_skips() -> None:
    ledger = ledger_with(
        (1, "alpha", "a", '{"v":1}'), (2, "alpha", "a", '{"v":2}'), (3, "alpha", "a", '{"v":3}')
    )
    opening = [event(ChangeType.SNAPSHOT_BEGIN, 0), event(ChangeType.CATCH_UP_END, 0)]

    catch_up = feed(
        ["alpha"],
        ledger,
        *opening,
        event(ChangeType.CATCH_UP_BEGIN, 0),
        event(ChangeType.UPSERT, 2, "alpha", "a", '{"v":2}'),
        event(ChangeType.CATCH_UP_END, 2),
        event(ChangeType.UPSERT, 3, "alpha", "a", '{"v":3}'),
    )
    resync = feed(
        ["alpha"],
        ledger,
        *opening,
        event(ChangeType.RESYNC, 3),
        event(ChangeType.SNAPSHOT_BEGIN, 3),
        event(ChangeType.UPSERT, 3, "alpha", "a", '{"v":3}'),
        event(ChangeType.CATCH_UP_END, 3),
    )

    assert catch_up == []
    assert resync == []


def test_checker_catches_disorder_and_wrong_content() -> None:
    ledger = ledger_with((1, "alpha", "a", '{"v":1}'), (2, "alpha", "a", '{"v":2}'))
    opening = [event(ChangeType.SNAPSHOT_BEGIN, 0), event(ChangeType.CATCH_UP_END, 0)]
    first = event(ChangeType.UPSERT, 1, "alpha", "a", '{"v":1}')
    second = event(ChangeType.UPSERT, 2, "alpha", "a", '{"v":2}')

    repeated = feed(["alpha"], ledger, *opening, first, second, second)
    wrong = feed(
        ["alpha"], ledger, *opening, first, event(ChangeType.UPSERT, 2, "alpha", "a", '{"v":9}')
    )
    behind = feed(["alpha"], ledger, *opening, first, second, event(ChangeType.HEARTBEAT, 1))

    assert repeated
    assert "not increasing" in repeated[0]
    assert wrong
    assert "differs" in wrong[0]
    assert behind
    assert "behind position 2" in behind[0]
