"""PutDocument and DeleteDocument with `expected_sequence`, a compare-and-set, against the
real server: through both clients of the facade (grpclib and grpcio), a raw grpclib stream
and grpcio for the trailing metadata, and the client library, whose `PreconditionFailed`
carries the current sequence. Of concurrent writers that expect the same sequence, exactly
one wins."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import grpc
import grpclib.client
import pytest
from grpclib.const import Cardinality, Status
from grpclib.exceptions import GRPCError

from peat_sync.bench.launcher import ServerProcess
from peat_sync.client import Client, PreconditionFailed, Rejected
from peat_sync.generated.peat.sidecar import v1 as pb
from peat_sync.wire import CURRENT_SEQUENCE_TRAILER, PUT_DOCUMENT
from tests.helpers.clients import Client as FacadeClient
from tests.helpers.clients import GrpcioClient, delete, failure_of, get, put, status
from tests.helpers.waiting import CALL_TIMEOUT, run_scenario

# Writers that race for one document, expecting the same sequence.
RACERS = 8


def conditional_put(client: FacadeClient, doc_id: str, json_data: str, expected: int) -> int:
    sequence: int = client.call(
        "PutDocument",
        collection="c",
        doc_id=doc_id,
        json_data=json_data,
        expected_sequence=expected,
    )["sequence"]
    return sequence


def conditional_delete(client: FacadeClient, doc_id: str, expected: int) -> int:
    sequence: int = client.call(
        "DeleteDocument", collection="c", doc_id=doc_id, expected_sequence=expected
    )["sequence"]
    return sequence


def stale(doc_id: str, current: int, expected: int) -> str:
    """The message of a write whose expected sequence did not hold."""
    if current == 0:
        return f"document 'c'/{doc_id!r} does not exist, so it is not at sequence {expected}"
    return f"document 'c'/{doc_id!r} is at sequence {current}, not {expected}"


# ---------------------------------------------------------------------------------------------
# Both clients of the facade


def test_a_put_commits_only_at_the_expected_sequence(client: FacadeClient) -> None:
    """0 creates a document that does not exist; its sequence updates it; any other is
    refused with FAILED_PRECONDITION naming the current sequence, and changes nothing."""
    assert conditional_put(client, "d", '{"v": 1}', 0) == 1
    failure = failure_of(
        client, "PutDocument", collection="c", doc_id="d", json_data="{}", expected_sequence=0
    )
    assert failure.code == "FAILED_PRECONDITION"
    assert failure.message == stale("d", 1, 0) + ": re-read it and retry"
    assert conditional_put(client, "d", '{"v": 2}', 1) == 2
    failure = failure_of(
        client, "PutDocument", collection="c", doc_id="d", json_data="{}", expected_sequence=1
    )
    assert (failure.code, failure.message) == (
        "FAILED_PRECONDITION",
        stale("d", 2, 1) + ": re-read it and retry",
    )
    assert get(client, "c", "d") == ('{"v": 2}', 2)
    assert status(client)["head_sequence"] == 2
    assert put(client, "c", "d", '{"v": 3}') == 3, "without one, a put is unconditional"


def test_a_delete_commits_only_at_the_expected_sequence(client: FacadeClient) -> None:
    """A stale delete changes nothing; one at the current sequence deletes; a deleted
    document is at 0 or at its delete's sequence, so either revives it; and a delete of a
    document that does not exist, expected at 0, commits nothing, returning 0."""
    put(client, "c", "d", "{}")
    failure = failure_of(client, "DeleteDocument", collection="c", doc_id="d", expected_sequence=7)
    assert (failure.code, failure.message) == (
        "FAILED_PRECONDITION",
        stale("d", 1, 7) + ": re-read it and retry",
    )
    assert get(client, "c", "d") == ("{}", 1)
    assert conditional_delete(client, "d", 1) == 2
    assert conditional_delete(client, "d", 0) == 0
    assert conditional_delete(client, "never", 0) == 0
    failure = failure_of(client, "DeleteDocument", collection="c", doc_id="d", expected_sequence=1)
    assert failure.message == stale("d", 0, 1) + ": re-read it and retry"
    assert conditional_put(client, "d", '{"back": true}', 2) == 3
    assert delete(client, "c", "d") == 4
    assert conditional_put(client, "d", '{"back": 2}', 0) == 5
    assert status(client)["head_sequence"] == 5


# ---------------------------------------------------------------------------------------------
# The current sequence in the trailing metadata


def test_grpcio_sees_the_current_sequence_in_the_trailing_metadata(
    grpcio_client: GrpcioClient,
) -> None:
    pb2 = grpcio_client.pb2
    put(grpcio_client, "c", "d", "{}")
    put(grpcio_client, "c", "d", "{}")
    request = pb2.PutDocumentRequest(collection="c", doc_id="d", json_data="{}")
    request.expected_sequence = 1
    with pytest.raises(grpc.RpcError) as raised:
        grpcio_client.stub.PutDocument(request, timeout=CALL_TIMEOUT)
    failure: Any = raised.value
    assert failure.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert stale("d", 2, 1) in failure.details()
    assert (CURRENT_SEQUENCE_TRAILER, "2") in failure.trailing_metadata()

    request = pb2.DeleteDocumentRequest(collection="c", doc_id="absent", expected_sequence=3)
    with pytest.raises(grpc.RpcError) as raised:
        grpcio_client.stub.DeleteDocument(request, timeout=CALL_TIMEOUT)
    failure = raised.value
    assert failure.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert (CURRENT_SEQUENCE_TRAILER, "0") in failure.trailing_metadata()


def test_a_raw_grpclib_call_sees_the_status_message_and_trailer(server: ServerProcess) -> None:
    """The generated stub raises GRPCError with the status and message; a stream opened on
    the channel also has the trailer."""

    async def scenario() -> None:
        channel = grpclib.client.Channel("127.0.0.1", server.port)
        try:
            stub = pb.PeatSidecarStub(channel, timeout=CALL_TIMEOUT)
            first = await stub.put_document(
                pb.PutDocumentRequest(collection="c", doc_id="d", json_data="{}")
            )
            request = pb.PutDocumentRequest(
                collection="c", doc_id="d", json_data="{}", expected_sequence=0
            )
            with pytest.raises(GRPCError) as raised:
                await stub.put_document(request)
            assert raised.value.status is Status.FAILED_PRECONDITION
            assert raised.value.message == stale("d", first.sequence, 0) + ": re-read it and retry"

            async with channel.request(
                PUT_DOCUMENT,
                Cardinality.UNARY_UNARY,
                pb.PutDocumentRequest,
                pb.PutDocumentResponse,
                timeout=CALL_TIMEOUT,
            ) as stream:
                await stream.send_message(request, end=True)
                with pytest.raises(GRPCError):
                    await stream.recv_message()
                assert stream.trailing_metadata is not None
                assert stream.trailing_metadata[CURRENT_SEQUENCE_TRAILER] == "1"

            deleted = await stub.delete_document(
                pb.DeleteDocumentRequest(collection="c", doc_id="d", expected_sequence=1)
            )
            assert deleted.sequence == 2
        finally:
            channel.close()

    run_scenario(scenario, timeout=20)


# ---------------------------------------------------------------------------------------------
# The client library


def test_the_client_raises_precondition_failed_with_the_current_sequence(
    server: ServerProcess,
) -> None:
    """`PreconditionFailed` is a `Rejected` (FAILED_PRECONDITION) with `current_sequence`,
    for puts and deletes alike; a write that holds returns its sequence."""

    async def scenario() -> None:
        async with Client(server.address) as client:
            assert await client.put("c", "d", {"v": 1}, expected_sequence=0) == 1
            with pytest.raises(PreconditionFailed) as raised:
                await client.put("c", "d", {"v": 2}, expected_sequence=0)
            assert raised.value.current_sequence == 1
            assert isinstance(raised.value, Rejected)
            assert raised.value.status is Status.FAILED_PRECONDITION
            assert str(raised.value) == stale("d", 1, 0) + ": re-read it and retry"

            assert await client.put("c", "d", {"v": 2}, expected_sequence=1) == 2
            with pytest.raises(PreconditionFailed) as raised:
                await client.delete("c", "d", expected_sequence=1)
            assert raised.value.current_sequence == 2
            assert await client.delete("c", "d", expected_sequence=2) == 3
            with pytest.raises(PreconditionFailed) as raised:
                await client.put("c", "d", {"v": 3}, expected_sequence=2)
            assert raised.value.current_sequence == 0
            assert await client.delete("c", "d", expected_sequence=0) == 0

            # Other refusals stay what they were.
            with pytest.raises(Rejected) as refused:
                await client.put("c", "d", "[1]", expected_sequence=3)
            assert refused.type is Rejected
            assert refused.value.status is Status.INVALID_ARGUMENT
            assert (await client.status()).head_sequence == 3

    run_scenario(scenario, timeout=20)


# ---------------------------------------------------------------------------------------------
# Racing writers


def assert_one_winner(outcomes: list[int | str], head_before: int, refusal: str) -> int:
    """Of the writers' outcomes (a sequence, or a refusal described as a string), exactly one
    is a sequence, the next one; every other writer got `refusal`. Returns the winner's
    index."""
    winners = [index for index, outcome in enumerate(outcomes) if isinstance(outcome, int)]
    assert len(winners) == 1, outcomes
    (winner,) = winners
    assert outcomes[winner] == head_before + 1
    assert [outcome for outcome in outcomes if outcome != outcomes[winner]] == [refusal] * (
        RACERS - 1
    )
    return winner


def test_of_concurrent_writers_expecting_one_sequence_exactly_one_wins(
    server: ServerProcess, grpcio_client: GrpcioClient
) -> None:
    """Writers that read the document at the same sequence, then put at once expecting it:
    one commits, and each of the others is refused, naming the winner's sequence. Through
    the client library, a grpclib stub, and grpcio's futures."""

    async def library_race(client: Client, head: int) -> list[int | str]:
        async def write(number: int) -> int | str:
            try:
                return await client.put("c", "d", {"writer": number}, expected_sequence=head)
            except PreconditionFailed as exc:
                return f"{exc.status.name} (at {exc.current_sequence}): {exc}"

        return list(await asyncio.gather(*(write(number) for number in range(RACERS))))

    async def stub_race(stub: pb.PeatSidecarStub, head: int) -> list[int | str]:
        async def write(number: int) -> int | str:
            request = pb.PutDocumentRequest(
                collection="c",
                doc_id="d",
                json_data=json.dumps({"writer": number}),
                expected_sequence=head,
            )
            try:
                return (await stub.put_document(request)).sequence
            except GRPCError as exc:
                return f"{exc.status.name}: {exc.message}"

        return list(await asyncio.gather(*(write(number) for number in range(RACERS))))

    def grpcio_race(head: int) -> list[int | str]:
        pb2 = grpcio_client.pb2
        futures = [
            grpcio_client.stub.PutDocument.future(
                pb2.PutDocumentRequest(
                    collection="c",
                    doc_id="d",
                    json_data=json.dumps({"writer": number}),
                    expected_sequence=head,
                ),
                timeout=CALL_TIMEOUT,
            )
            for number in range(RACERS)
        ]
        outcomes: list[int | str] = []
        for future in futures:
            try:
                outcomes.append(future.result().sequence)
            except grpc.RpcError as exc:
                outcomes.append(f"{exc.code().name}: {exc.details()}")
        return outcomes

    async def scenario() -> None:
        async with Client(server.address) as client:
            stub = pb.PeatSidecarStub(client.channel, timeout=CALL_TIMEOUT)
            head = await client.put("c", "d", {"writer": None})
            for race in ("library", "stub", "grpcio"):
                if race == "library":
                    outcomes = await library_race(client, head)
                elif race == "stub":
                    outcomes = await stub_race(stub, head)
                else:
                    outcomes = await asyncio.to_thread(grpcio_race, head)
                message = stale("d", head + 1, head) + ": re-read it and retry"
                refusal = (
                    f"FAILED_PRECONDITION (at {head + 1}): {message}"
                    if race == "library"
                    else f"FAILED_PRECONDITION: {message}"
                )
                winner = assert_one_winner(outcomes, head, refusal)
                document = await client.get("c", "d")
                assert document is not None
                assert (document.sequence, document.data) == (head + 1, {"writer": winner}), race
                head += 1

    run_scenario(scenario, timeout=30)
