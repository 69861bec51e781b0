from __future__ import annotations

import grpc

from peat_sync.bench.launcher import ServerProcess
from tests.helpers.clients import GrpcioApi


def test_put_then_get_with_grpcio(server: ServerProcess, grpcio_api: GrpcioApi) -> None:
    pb2, pb2_grpc = grpcio_api
    with grpc.insecure_channel(server.address) as channel:
        stub = pb2_grpc.PeatSidecarStub(channel)
        put = stub.PutDocument(
            pb2.PutDocumentRequest(collection="c", doc_id="d", json_data='{"a": 1}'), timeout=10
        )
        got = stub.GetDocument(pb2.GetDocumentRequest(collection="c", doc_id="d"), timeout=10)
    assert put.sequence == 1
    assert got.json_data == '{"a": 1}'
    assert got.sequence == 1
