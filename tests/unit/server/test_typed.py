"""Typed collections: proto messages stored as upstream-compatible JSON documents."""

from __future__ import annotations

import json
import logging
import math

import betterproto2
import pytest

from peat_sync.generated.peat.sidecar.v1 import (
    Cell,
    CellStatus,
    Command,
    CommandStatus,
    Node,
    NodeStatus,
    Platform,
    PlatformStatus,
    Track,
    TrackCategory,
)
from peat_sync.node import InvalidRequest
from peat_sync.server import typed

NAME = {Platform: "platform", Node: "node", Cell: "cell", Track: "track", Command: "command"}

PLATFORM = Platform(
    id="p1",
    platform_type="ugv",
    name="Rover",
    status=PlatformStatus.DEGRADED,
    latitude=51.5,
    longitude=-0.125,
    altitude_m=12.0,
    readiness=0.75,
    capabilities=["camera", "lidar"],
    unit_id="u7",
    callsign="ROVER-1",
)
NODE = Node(
    id="n1",
    node_type="uav",
    name="Kestrel",
    status=NodeStatus.BUSY,
    latitude=-33.5,
    longitude=151.25,
    altitude_m=120.0,
    readiness=0.5,
    capabilities=["eo"],
    unit_id="u1",
    callsign="KES-1",
)
CELL = Cell(
    id="c1",
    name="Alpha",
    status=CellStatus.ACTIVE,
    node_count=3,
    center_latitude=1.5,
    center_longitude=2.5,
    capabilities=["recon"],
    formation_id="f1",
    leader_id="p1",
)
TRACK = Track(
    id="t1",
    source_node="p1",
    cell_id="c1",
    formation_id="f1",
    latitude=10.0,
    longitude=20.0,
    altitude_m=300.5,
    cep_m=4.0,
    heading_deg=90.0,
    speed_mps=0.0,
    classification="truck",
    confidence=0.9,
    category=TrackCategory.VEHICLE,
)
COMMAND = Command(
    id="cmd1",
    target_id="p1",
    command_type="move",
    status=CommandStatus.EXECUTING,
    created_at=1_700_000_000_000,
    expires_at=1_700_000_060_000,
    payload_json='{"to": [1, 2]}',
)


@pytest.mark.parametrize(
    "message", [PLATFORM, NODE, CELL, TRACK, COMMAND], ids=lambda m: type(m).__name__
)
def test_round_trip_with_every_field_set(message: betterproto2.Message) -> None:
    """A fully populated message survives to_json and from_json unchanged."""
    parsed = typed.from_json(type(message), typed.to_json(message, NAME[type(message)]))
    assert parsed == (message, [])


@pytest.mark.parametrize(
    "message",
    [Platform(id="p"), Node(id="n"), Cell(id="c"), Track(id="t"), Command(id="k")],
    ids=lambda m: type(m).__name__,
)
def test_round_trip_with_defaults_and_absent_optionals(message: betterproto2.Message) -> None:
    """A message with only its id set comes back with the same defaults and unset optionals."""
    parsed = typed.from_json(type(message), typed.to_json(message, NAME[type(message)]))
    assert parsed == (message, [])


def test_platform_document_matches_upstream_layout() -> None:
    """Keys are the proto field names, enums are integers, absent optionals are null."""
    document = json.loads(typed.to_json(Platform(id="p1", status=PlatformStatus.BUSY), "platform"))

    assert document == {
        "id": "p1",
        "platform_type": "",
        "name": "",
        "status": 2,
        "latitude": 0.0,
        "longitude": 0.0,
        "altitude_m": 0.0,
        "readiness": 0.0,
        "capabilities": [],
        "unit_id": None,
        "callsign": None,
    }


def test_cell_document_matches_upstream_layout() -> None:
    document = json.loads(typed.to_json(CELL, "cell"))

    assert document == {
        "id": "c1",
        "name": "Alpha",
        "status": 1,
        "node_count": 3,
        "center_latitude": 1.5,
        "center_longitude": 2.5,
        "capabilities": ["recon"],
        "formation_id": "f1",
        "leader_id": "p1",
    }


def test_track_document_keeps_a_set_zero_apart_from_an_absent_optional() -> None:
    """An optional set to 0.0 stays 0.0, an unset one is null: the two must not merge."""
    document = json.loads(
        typed.to_json(Track(id="t1", speed_mps=0.0, category=TrackCategory.AIR), "track")
    )

    assert document["speed_mps"] == 0.0
    assert document["heading_deg"] is None
    assert document["altitude_m"] is None
    assert document["cell_id"] is None
    assert document["category"] == 4
    assert set(document) == {
        "id", "source_node", "cell_id", "formation_id", "latitude", "longitude",
        "altitude_m", "cep_m", "heading_deg", "speed_mps", "classification", "confidence",
        "category",
    }  # fmt: skip

    parsed, _ = typed.from_json(Track, typed.to_json(Track(id="t1", speed_mps=0.0), "track"))
    assert parsed.speed_mps == 0.0
    assert parsed.heading_deg is None


def test_command_document_matches_upstream_layout() -> None:
    document = json.loads(typed.to_json(COMMAND, "command"))

    assert document == {
        "id": "cmd1",
        "target_id": "p1",
        "command_type": "move",
        "status": 2,
        "created_at": 1_700_000_000_000,
        "expires_at": 1_700_000_060_000,
        "payload_json": '{"to": [1, 2]}',
    }


def test_to_json_refuses_an_unknown_enum_value() -> None:
    """An enum number the proto does not define is refused, naming the field and the choices."""
    platform = Platform(id="p1", status=PlatformStatus(99))

    with pytest.raises(InvalidRequest, match=r"^platform\.status is 99, which is not a") as raised:
        typed.to_json(platform, "platform")

    assert "1 (READY)" in str(raised.value)


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_to_json_refuses_non_finite_numbers(value: float) -> None:
    """NaN and Infinity have no JSON form: refused instead of stored as invalid JSON."""
    with pytest.raises(InvalidRequest, match=r"^track holds NaN or Infinity"):
        typed.to_json(Track(id="t1", speed_mps=value), "track")


def test_from_json_reads_an_upstream_document() -> None:
    """A document written by the upstream sidecar (integer enums, integral doubles, nulls,
    missing keys) parses into the message."""
    upstream = (
        '{"id": "p9", "name": "Drone", "status": 1, "latitude": 5, "capabilities": ["eo"],'
        ' "unit_id": null, "callsign": "D9"}'
    )

    platform, defaulted = typed.from_json(Platform, upstream)

    assert platform == Platform(
        id="p9",
        name="Drone",
        status=PlatformStatus.READY,
        latitude=5.0,
        capabilities=["eo"],
        callsign="D9",
    )
    assert isinstance(platform.latitude, float)
    assert platform.unit_id is None
    assert defaulted == []


def test_node_document_matches_upstream_layout() -> None:
    """A Node is stored like a Platform, with node_type for platform_type."""
    document = json.loads(typed.to_json(Node(id="n1", status=NodeStatus.OFFLINE), "node"))

    assert document == {
        "id": "n1",
        "node_type": "",
        "name": "",
        "status": 4,
        "latitude": 0.0,
        "longitude": 0.0,
        "altitude_m": 0.0,
        "readiness": 0.0,
        "capabilities": [],
        "unit_id": None,
        "callsign": None,
    }


@pytest.mark.parametrize(
    ("message_type", "json_data", "expected"),
    [
        (Cell, '{"id": "c1", "platform_count": 4}', Cell(id="c1", node_count=4)),
        (Cell, '{"id": "c1", "node_count": 4}', Cell(id="c1", node_count=4)),
        (Track, '{"id": "t1", "source_platform": "p1"}', Track(id="t1", source_node="p1")),
        (Track, '{"id": "t1", "source_node": "p1"}', Track(id="t1", source_node="p1")),
    ],
    ids=["platform_count", "node_count", "source_platform", "source_node"],
)
def test_documents_with_the_first_upstream_key_names_read_as_the_renamed_fields(
    message_type: type[betterproto2.Message], json_data: str, expected: betterproto2.Message
) -> None:
    """Documents stored before upstream renamed the fields read the same as new ones."""
    assert typed.from_json(message_type, json_data) == (expected, [])


def test_the_new_key_name_wins_over_the_old_one() -> None:
    """A document that holds both names (a writer of each kind touched it) is read by the new
    one, which is the one written today."""
    cell, _ = typed.from_json(Cell, '{"id": "c1", "platform_count": 1, "node_count": 2}')
    track, _ = typed.from_json(
        Track, '{"id": "t1", "source_node": "new", "source_platform": "old"}'
    )

    assert (cell.node_count, track.source_node) == (2, "new")


def test_writes_use_the_new_key_names() -> None:
    cell = json.loads(typed.to_json(Cell(id="c1", node_count=2), "cell"))
    track = json.loads(typed.to_json(Track(id="t1", source_node="p1"), "track"))

    assert (cell["node_count"], track["source_node"]) == (2, "p1")
    assert "platform_count" not in cell
    assert "source_platform" not in track


def test_from_documents_skips_documents_that_are_not_json_objects(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A document that is not a JSON object has no fields to read: it is skipped and named
    in a warning; the rest are returned."""
    caplog.set_level(logging.WARNING, logger="peat_sync.typed")
    documents = [
        ("p1", typed.to_json(Platform(id="p1"), "platform")),
        ("broken", "{not json"),
        ("array", "[1, 2]"),
        ("p2", typed.to_json(Platform(id="p2", name="second"), "platform")),
    ]

    platforms = typed.from_documents(Platform, documents)

    assert platforms == [Platform(id="p1"), Platform(id="p2", name="second")]
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 2
    for doc_id, warning in zip(["broken", "array"], warnings, strict=True):
        assert f"skipping platforms/{doc_id}: it is not a valid Platform" in warning


@pytest.mark.parametrize(
    ("json_data", "expected", "named"),
    [
        ('{"id": "p1", "latitude": "north", "name": "n"}', Platform(id="p1", name="n"), "latitude"),
        ('{"id": 5, "name": "n"}', Platform(name="n"), "id"),
        ('{"id": "p1", "capabilities": [1, 2]}', Platform(id="p1"), "capabilities"),
        ('{"id": "p1", "callsign": 7}', Platform(id="p1"), "callsign"),
        ('{"id": "p1", "status": "READY"}', Platform(id="p1"), "status"),
        ('{"id": "p1", "readiness": 1' + "0" * 400 + "}", Platform(id="p1"), "readiness"),
    ],
    ids=["double-as-string", "id-as-number", "list-of-numbers", "optional", "enum", "overflow"],
)
def test_a_wrong_typed_field_is_returned_defaulted_with_a_warning(
    json_data: str, expected: Platform, named: str, caplog: pytest.LogCaptureFixture
) -> None:
    """As upstream reads it: the document is returned, the field that does not fit holds its
    default (an optional is unset), and a warning names the document and the field; every
    message returned can be encoded."""
    caplog.set_level(logging.WARNING, logger="peat_sync.typed")
    documents = [("bad", json_data), ("good", typed.to_json(Platform(id="good"), "platform"))]

    platforms = typed.from_documents(Platform, documents)

    for platform in platforms:
        bytes(platform)  # what the server does with every returned message
    assert platforms == [expected, Platform(id="good")]
    (warning,) = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warning.startswith(
        "platforms/bad is returned with defaults for the fields that do not fit a Platform: "
        + named
        + ":"
    )
