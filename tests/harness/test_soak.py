"""The soak (`python -m harness.soak`): a short soak under kills must end without a
violation, having gone through the faults it is about (kills, catch-ups, RESYNCs), for a
single node and for shared mode's fleet; and the checker must catch each kind of violation
it exists for, fed by hand."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from harness.soak.checker import (
    LastMessage,
    StoredDocument,
    copy_violations,
    documents_of,
    doubled_writes,
    feed_violations,
    noop_delete_violations,
    replica_violations,
    store_violations,
    stream_violations,
    superseded_in,
)
from harness.soak.feed import FeedRecord
from harness.soak.ledger import Ledger
from harness.soak.sightings import Sightings
from peat_sync.bench.launcher import server_env as clean_env
from peat_sync.client import ChangeType, Event, ResyncReason
from tests.helpers.cli import help_entries
from tests.helpers.paths import ROOT

# About 10-20 s on an idle 2-core machine; the bound leaves room for a loaded one.
SOAK_TIMEOUT = 110.0
# About 20 s on an idle 2-core machine, most of it the NATS kills' leader elections.
SHARED_SOAK_TIMEOUT = 110.0
# The one violation every shared soak meets today: the shared-mode writer acknowledges some
# deletes of documents that do not exist with a sequence, where it must answer 0 (when the
# store's head passes the write before the replica reports the write applied). Until
# peat_sync/shared/writer.py is fixed, the shared soak's test is an expected failure if that
# is its only violation; remove this then.
NOOP_DELETE_ACKED = "a delete that changes nothing is acknowledged with sequence 0"
# `--help` and usage errors: no server, only the imports.
COMMAND_TIMEOUT = 30.0
SOAK = [sys.executable, "-m", "harness.soak"]
COLLECTIONS = ["alpha", "bravo"]


def run_soak(
    tmp_path: Path, *args: str, timeout: float = SOAK_TIMEOUT
) -> tuple[subprocess.CompletedProcess[str], Any]:
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
        stdout, stderr = process.communicate(timeout=timeout)
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


@pytest.mark.timeout(SHARED_SOAK_TIMEOUT + 10)
def test_short_shared_soak_under_kills_of_sidecars_and_nats_nodes_has_no_violation(
    tmp_path: Path,
) -> None:
    """Three sidecars on a three-node NATS cluster, writers and subscribers on each, and
    three SIGKILLs of sidecars and NATS nodes (both kinds): every acknowledged write is in
    the stream and every store, the stores are equal, every copy equals its store, no feed
    hides a write, none is applied twice; and subscribers moved between sidecars."""
    result, counts = run_soak(
        tmp_path,
        *("--shared", "--events", "6000", "--kills", "3", "--fault-gap", "1", "--seed", "3"),
        timeout=SHARED_SOAK_TIMEOUT,
    )

    assert counts is not None, result.stdout[-3000:] + result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    # Open: now and then, under kills, a delete of an absent document is acknowledged with a
    # sequence rather than 0 (its sidecar did not see its message changing nothing). Every
    # other promise is held; this one is reported, as an expected failure, until fixed.
    others = [line for line in counts["violation_list"] if NOOP_DELETE_ACKED not in line]
    assert others == [], result.stderr[-3000:]
    assert counts["writes_acked"] >= 6000
    assert counts["sidecar_kills"] >= 1
    assert counts["nats_kills"] >= 1
    assert counts["sidecar_kills"] + counts["nats_kills"] == 3
    assert counts["ambiguous_writes"] > 0
    assert counts["catch_ups"] > 0
    assert counts["moves"] > 0
    assert counts["reconnections"] > 0
    assert counts["events_received"] > counts["head_sequence"]
    if counts["violations"]:
        pytest.xfail(
            f"{counts['violations']} deletes of absent documents acknowledged at a sequence"
        )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
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
    flags = ("--events", "--writers", "--subscribers", "--kills", "--kill-every", "--json")
    for flag in (*flags, "--logs", "--shared", "--sidecars", "--nats-write-timeout"):
        assert len(entries[flag]) > len(flag) + 20, (flag, entries[flag])
    assert "exit status" in result.stdout


def test_bad_json_directory_is_a_usage_error(tmp_path: Path) -> None:
    result = run_command("--events", "10", "--json", str(tmp_path / "none" / "x.json"))

    assert result.returncode == 2
    assert "no directory" in result.stderr


def test_shared_mode_options_without_shared_are_a_usage_error() -> None:
    result = run_command("--events", "10", "--sidecars", "2")

    assert result.returncode == 2
    assert "go with --shared" in result.stderr


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


def test_checker_catches_a_resync_for_a_lost_epoch_and_a_catch_up_that_goes_back() -> None:
    ledger = ledger_with((1, "alpha", "a", '{"v":1}'), (2, "alpha", "a", '{"v":2}'))
    opening = [event(ChangeType.SNAPSHOT_BEGIN, 0), event(ChangeType.CATCH_UP_END, 0)]
    first = event(ChangeType.UPSERT, 1, "alpha", "a", '{"v":1}')
    unknown_epoch = Event(ChangeType.RESYNC, 2, resync_reason=ResyncReason.UNKNOWN_EPOCH)
    compacted = Event(ChangeType.RESYNC, 2, resync_reason=ResyncReason.HISTORY_COMPACTED)

    lost = feed(["alpha"], ledger, *opening, first, unknown_epoch)
    fine = feed(["alpha"], ledger, *opening, first, compacted)
    back = feed(
        ["alpha"],
        ledger,
        *opening,
        event(ChangeType.CATCH_UP_BEGIN, 0),
        event(ChangeType.UPSERT, 2, "alpha", "a", '{"v":2}'),
        event(ChangeType.CATCH_UP_END, 1),
    )

    assert lost
    assert "UNKNOWN_EPOCH" in lost[0]
    assert fine == []
    assert back
    assert "behind" in back[0]


# Shared mode's checks, fed by hand ---------------------------------------------------------


def test_checker_accepts_a_stream_that_holds_each_acknowledged_write_or_a_later_one() -> None:
    ledger = ledger_with(
        (1, "alpha", "a", '{"v":1}'), (2, "alpha", "b", '{"v":2}'), (3, "bravo", "c", None)
    )
    ledger.record_ambiguous([("alpha", "b", '{"v":9}')], failed_at=9.0)
    ledger.record_acked([("bravo", "d", None)], [0], sent_at=9.0)  # nothing to delete
    stream = {
        ("alpha", "a"): LastMessage(1, '{"v":1}'),
        ("alpha", "b"): LastMessage(7, '{"v":9}'),  # the ambiguous write did commit
        ("bravo", "c"): LastMessage(3, None),
        ("bravo", "d"): LastMessage(8, None),  # the tombstone of the delete of nothing
    }

    assert stream_violations(ledger, stream) == []
    assert documents_of(stream) == {
        "alpha": {"a": StoredDocument('{"v":1}', 1), "b": StoredDocument('{"v":9}', 7)}
    }


def test_checker_catches_a_stream_that_lost_or_invented_a_write() -> None:
    ledger = ledger_with((1, "alpha", "a", '{"v":1}'), (2, "alpha", "b", '{"v":2}'))

    lost = stream_violations(ledger, {("alpha", "a"): LastMessage(1, '{"v":1}')})
    older = stream_violations(
        ledger, {("alpha", "a"): LastMessage(1, '{"v":1}'), ("alpha", "b"): LastMessage(1, "{}")}
    )
    invented = stream_violations(
        ledger,
        {
            ("alpha", "a"): LastMessage(5, '{"v":5}'),
            ("alpha", "b"): LastMessage(2, '{"v":2}'),
        },
    )

    assert lost == ["stream: alpha/b acked at 2 has no message in the stream"]
    assert older
    assert "older than its write acked at 2" in older[0]
    assert invented
    assert "alpha/a at 5 holds a document no writer sent" in invented[0]


def test_checker_catches_a_store_unlike_the_stream_or_another_store() -> None:
    expected = {"alpha": {"a": StoredDocument('{"v":1}', 1)}}

    assert replica_violations("s1", {"alpha": {"a": StoredDocument('{"v":1}', 1)}}, expected) == []
    stale = replica_violations("s2", {"alpha": {"a": StoredDocument('{"v":1}', 0)}}, expected)
    extra = replica_violations(
        "s3",
        {"alpha": {"a": StoredDocument('{"v":1}', 1)}, "bravo": {"z": StoredDocument("{}", 2)}},
        expected,
    )

    assert stale
    assert "a at 0, not 1" in stale[0]
    assert extra
    assert "extra ['z']" in extra[0]


def test_checker_lets_a_feed_pass_over_a_superseded_write_only() -> None:
    ledger = ledger_with(
        (1, "alpha", "a", '{"v":1}'), (2, "alpha", "b", '{"v":2}'), (3, "alpha", "a", '{"v":3}')
    )
    stream = {("alpha", "a"): LastMessage(3, '{"v":3}'), ("alpha", "b"): LastMessage(2, '{"v":2}')}
    opening = [event(ChangeType.SNAPSHOT_BEGIN, 0), event(ChangeType.CATCH_UP_END, 0)]
    superseded = superseded_in(stream, ledger)

    def shared_feed(*events: Event) -> list[str]:
        record = FeedRecord("s", ["alpha"])
        for each in events:
            record.observe(each, ledger)
        return feed_violations([record], ledger, excused=superseded)

    second = event(ChangeType.UPSERT, 2, "alpha", "b", '{"v":2}')
    third = event(ChangeType.UPSERT, 3, "alpha", "a", '{"v":3}')
    assert shared_feed(*opening, second, third) == []  # 1 was superseded by 3
    lost = shared_feed(*opening, event(ChangeType.UPSERT, 1, "alpha", "a", '{"v":1}'), third)
    assert lost
    assert "alpha/b at 2" in lost[0]


def test_checker_catches_a_delete_of_nothing_acknowledged_at_a_sequence() -> None:
    ledger = ledger_with(
        (1, "alpha", "a", '{"v":1}'),
        (2, "alpha", "a", None),  # deletes a document
        (3, "alpha", "a", None),  # deletes nothing: 0 was due
        (4, "alpha", "b", None),  # never written: 0 was due
        (5, "alpha", "c", None),  # an ambiguous put may have come before
    )
    ledger.record_ambiguous([("alpha", "c", '{"v":5}')], failed_at=1.0)

    found, sequences = noop_delete_violations(ledger)

    assert sequences == {3, 4}
    assert len(found) == 2
    assert "alpha/b was acknowledged at 4" in found[1]
    assert NOOP_DELETE_ACKED in found[1]


def test_checker_catches_a_write_applied_twice() -> None:
    ledger = ledger_with((1, "alpha", "a", '{"v":1}'), (2, "alpha", "b", '{"v":2}'))
    sightings = Sightings()
    record = FeedRecord("s", [], sightings)
    for each in [
        event(ChangeType.SNAPSHOT_BEGIN, 0),
        event(ChangeType.CATCH_UP_END, 0),
        event(ChangeType.UPSERT, 1, "alpha", "a", '{"v":1}'),
        event(ChangeType.UPSERT, 2, "alpha", "b", '{"v":2}'),
        event(ChangeType.UPSERT, 3, "alpha", "a", '{"v":1}'),  # the first write again
    ]:
        record.observe(each, ledger)
    stream = {("alpha", "a"): LastMessage(3, '{"v":1}'), ("alpha", "b"): LastMessage(2, '{"v":2}')}

    doubled = doubled_writes(sightings, ledger, stream, {})

    assert doubled == [
        "doubled: alpha/a: the same write at sequences 1 and 3 (the latter seen by s):"
        " applied twice"
    ]


def test_checker_lets_a_feed_pass_over_a_delete_only_of_what_its_copy_did_not_hold() -> None:
    """In shared mode a sidecar that never held a document (its puts were superseded by the
    delete before the sidecar read them) applies the delete as no change: a follower there
    that never held the document either has nothing to miss."""
    ledger = ledger_with(
        (1, "alpha", "a", '{"v":1}'), (2, "alpha", "a", None), (3, "alpha", "b", '{"v":3}')
    )
    stream = {("alpha", "a"): LastMessage(2, None), ("alpha", "b"): LastMessage(3, '{"v":3}')}
    opening = [event(ChangeType.SNAPSHOT_BEGIN, 0), event(ChangeType.CATCH_UP_END, 0)]
    third = event(ChangeType.UPSERT, 3, "alpha", "b", '{"v":3}')

    def shared_feed(*events: Event) -> list[str]:
        record = FeedRecord("s", ["alpha"], track_documents=True)
        for each in events:
            record.observe(each, ledger)
        return feed_violations([record], ledger, excused=superseded_in(stream, ledger))

    assert shared_feed(*opening, third) == []  # 1 superseded; 2 deleted what it never had
    held = shared_feed(*opening, event(ChangeType.UPSERT, 1, "alpha", "a", '{"v":1}'), third)
    assert held
    assert "the delete of alpha/a at 2" in held[0]
    snapshot_without_it = shared_feed(
        *opening,
        event(ChangeType.UPSERT, 1, "alpha", "a", '{"v":1}'),
        event(ChangeType.RESYNC, 1),
        event(ChangeType.SNAPSHOT_BEGIN, 1),
        event(ChangeType.CATCH_UP_END, 1),
        third,
    )
    assert snapshot_without_it == []
