"""The calls that upstream's first and today's protos share, made by a client of either and
checked against what a single peat-sync node answers."""

from __future__ import annotations

import json

from tests.helpers.clients import GrpcioClient, failure_of, grpcio_dict


def assert_status_peers_and_sync(client: GrpcioClient) -> None:
    """GetStatus, the peer RPCs and the sync RPCs: a single node has no mesh and says so."""
    pb2 = client.pb2
    described = client.call("GetStatus")
    assert described["node_id"]
    assert described["phase"] == pb2.NODE_PHASE_READY
    assert (described["sync_active"], described["connected_peers"]) == (False, 0)

    assert client.call("ListPeers") == {"peers": []}
    refused = failure_of(client, "ConnectPeer", endpoint_id="peer-1", addresses=["10.0.0.2:7"])
    assert refused.code == "UNIMPLEMENTED"
    assert "no peer mesh" in refused.message
    refused = failure_of(client, "DisconnectPeer", endpoint_id="peer-1")
    assert refused.code == "FAILED_PRECONDITION"
    assert "no peer 'peer-1' is connected" in refused.message

    refused = failure_of(client, "StartSync")
    assert refused.code == "UNIMPLEMENTED"
    assert "no peer mesh" in refused.message
    assert client.call("StopSync") == {}
    assert client.call("GetSyncStats") == {
        "sync_active": False,
        "connected_peers": 0,
        "bytes_sent": 0,
        "bytes_received": 0,
    }


def assert_documents(client: GrpcioClient) -> None:
    """PutDocument, GetDocument, ListDocuments and DeleteDocument, with upstream's messages:
    its responses to writes are empty (the sequence the server adds is a field it skips)."""
    assert client.call("PutDocument", collection="notes", doc_id="n1", json_data='{"a": 1}') == {}
    assert client.call("PutDocument", collection="notes", doc_id="n2", json_data='{"b": 2}') == {}
    assert client.call("GetDocument", collection="notes", doc_id="n1") == {"json_data": '{"a": 1}'}
    assert client.call("ListDocuments", collection="notes") == {"doc_ids": ["n1", "n2"]}
    assert client.call("DeleteDocument", collection="notes", doc_id="n1") == {}
    assert client.call("GetDocument", collection="notes", doc_id="n1") == {"json_data": None}
    assert client.call("ListDocuments", collection="notes") == {"doc_ids": ["n2"]}
    # Deleting an absent document is no error (upstream even emits a DELETE for it).
    assert client.call("DeleteDocument", collection="notes", doc_id="never") == {}
    refused = failure_of(client, "PutDocument", collection="notes", doc_id="bad", json_data="{")
    assert refused.code == "INVALID_ARGUMENT"


def assert_commands(client: GrpcioClient) -> None:
    """PutCommand and GetCommands, whose messages did not change upstream."""
    pb2 = client.pb2
    command = pb2.Command(
        id="c1",
        target_id="n1",
        command_type="move",
        status=pb2.COMMAND_STATUS_PENDING,
        created_at=1_700_000_000,
        expires_at=1_700_000_060,
        payload_json='{"to": [1, 2]}',
    )
    assert client.call("PutCommand", command=command) == {}
    assert client.call("GetCommands")["commands"] == [grpcio_dict(command)]
    stored = client.call("GetDocument", collection="commands", doc_id="c1")["json_data"]
    assert json.loads(stored)["status"] == pb2.COMMAND_STATUS_PENDING


def stored_keys(client: GrpcioClient, collection: str, doc_id: str) -> set[str]:
    """The JSON keys of a typed document, as GetDocument returns it."""
    json_data = client.call("GetDocument", collection=collection, doc_id=doc_id)["json_data"]
    assert json_data is not None, f"{collection}/{doc_id} is absent"
    return set(json.loads(json_data))
