"""Standard gRPC services: health checking and server reflection.

Everything here is asyncio-flavoured; trio code calls it through `bridge`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any

from google.protobuf.descriptor import FileDescriptor
from google.protobuf.descriptor_pb2 import FileDescriptorProto
from google.protobuf.descriptor_pool import DescriptorPool
from grpclib import GRPCError
from grpclib._typing import IServable
from grpclib.const import Status
from grpclib.health.v1 import health_pb2
from grpclib.health.v1.health_grpc import HealthBase
from grpclib.health.v1.health_pb2 import HealthCheckRequest, HealthCheckResponse
from grpclib.reflection import _deprecated as reflection_v1alpha
from grpclib.reflection.service import ServerReflection
from grpclib.reflection.v1 import reflection_pb2
from grpclib.reflection.v1alpha import reflection_pb2 as reflection_v1alpha_pb2
from grpclib.server import Stream

from peat_sync.generated.google_proto_descriptor_pool import default_google_proto_descriptor_pool

# The protos of the standard services; the generated code registers the sidecar's own.
_STANDARD_PROTOS: tuple[FileDescriptor, ...] = (
    health_pb2.DESCRIPTOR,
    reflection_pb2.DESCRIPTOR,
    reflection_v1alpha_pb2.DESCRIPTOR,
)
_REFLECTION_SERVICES = (
    reflection_pb2.DESCRIPTOR.services_by_name["ServerReflection"].full_name,
    reflection_v1alpha_pb2.DESCRIPTOR.services_by_name["ServerReflection"].full_name,
)


def service_names(services: Iterable[IServable]) -> list[str]:
    """The full names of the gRPC services that `services` serve."""
    paths = (path for service in services for path in service.__mapping__())
    return list(dict.fromkeys(path.split("/")[1] for path in paths))


class Health(HealthBase):
    """`grpc.health.v1.Health`: one status for the whole server ("") and for each of
    `services`; NOT_SERVING until `set_serving(True)`, and for good after `shut_down()`.

    grpclib has a Health service, but its Watch streams do not survive a shutdown: closing
    the server right after reporting NOT_SERVING cancels them before they send it (in half
    of the shutdowns, measured), and a stream left to die with the connection loses what its
    grpcio client has not read yet. Here `shut_down` ends each Watch stream itself, with
    NOT_SERVING and then UNAVAILABLE.
    """

    def __init__(self, services: Iterable[str]) -> None:
        self._known = frozenset(("", *services))
        self._serving = False
        self._shutting_down = False
        # Set, and replaced by a fresh event, at each change.
        self._changed = asyncio.Event()
        self._watchers: set[object] = set()
        # Set each time a Watch stream ends.
        self._watcher_left = asyncio.Event()

    def _status(self, service: str) -> HealthCheckResponse.ServingStatus.ValueType:
        if service not in self._known:
            return HealthCheckResponse.SERVICE_UNKNOWN
        return HealthCheckResponse.SERVING if self._serving else HealthCheckResponse.NOT_SERVING

    def _change(self) -> None:
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    async def set_serving(self, serving: bool) -> None:
        """Report SERVING or NOT_SERVING from now on."""
        self._serving = serving
        self._change()

    async def shut_down(self) -> None:
        """Report NOT_SERVING for good, and end each Watch stream, once it has sent that,
        with UNAVAILABLE; returns when they have all ended (bound the wait: a client that
        stopped reading holds it up)."""
        self._serving = False
        self._shutting_down = True
        self._change()
        while self._watchers:
            self._watcher_left.clear()
            await self._watcher_left.wait()

    async def Check(self, stream: Stream[HealthCheckRequest, HealthCheckResponse]) -> None:
        request = await stream.recv_message()
        assert request is not None
        status = self._status(request.service)
        if status == HealthCheckResponse.SERVICE_UNKNOWN:
            raise GRPCError(Status.NOT_FOUND, f"no health status for service {request.service!r}")
        await stream.send_message(HealthCheckResponse(status=status))

    async def Watch(self, stream: Stream[HealthCheckRequest, HealthCheckResponse]) -> None:
        """Sends the status, then each change of it; an unknown service gets SERVICE_UNKNOWN
        and the stream stays open, as the protocol asks."""
        request = await stream.recv_message()
        assert request is not None
        watcher = object()
        self._watchers.add(watcher)
        try:
            sent = None
            while True:
                changed, status = self._changed, self._status(request.service)
                if status != sent:
                    await stream.send_message(HealthCheckResponse(status=status))
                    sent = status
                if self._shutting_down:
                    await stream.send_trailing_metadata(
                        status=Status.UNAVAILABLE, status_message="the server is shutting down"
                    )
                    return
                await changed.wait()
        finally:
            self._watchers.discard(watcher)
            self._watcher_left.set()


class _ReflectionPool:
    """A descriptor pool that also finds the file of a method, `package.Service.Method`, as
    the reflection protocol asks (grpcurl's `describe` of a method); protobuf's pool finds
    every other kind of symbol."""

    def __init__(self, pool: DescriptorPool) -> None:
        self._pool = pool

    def __getattr__(self, name: str) -> Any:
        return getattr(self._pool, name)

    def FindFileContainingSymbol(self, symbol: str) -> FileDescriptor:
        try:
            return self._pool.FindFileContainingSymbol(symbol)
        except KeyError:
            service, _, method = symbol.rpartition(".")
            if method not in self._pool.FindServiceByName(service).methods_by_name:
                raise
            return self._pool.FindFileContainingSymbol(service)


def _descriptor_pool() -> DescriptorPool:
    """The generated code's pool, holding the standard services' protos too."""
    pool = default_google_proto_descriptor_pool
    for proto in _STANDARD_PROTOS:
        file = FileDescriptorProto.FromString(proto.serialized_pb)
        # Their usual names: grpclib compiled them as grpclib/health/v1/health.proto ...
        file.name = "grpc/" + file.name.removeprefix("grpclib/")
        try:
            pool.FindFileByName(file.name)
        except KeyError:
            pool.AddSerializedFile(file.SerializeToString())
    return pool


def reflection(served: Iterable[IServable]) -> list[IServable]:
    """Server reflection, v1 and v1alpha, listing the `served` services and itself.

    Both versions, since clients use either: grpcurl tries v1 first, grpcio's reflection
    client knows only v1alpha. Every service listed can be described, so generic tools can
    call the sidecar without its proto file.
    """
    names = [*service_names(served), *_REFLECTION_SERVICES]
    descriptors = _descriptor_pool()
    for name in names:
        descriptors.FindServiceByName(name)  # KeyError if a listed service is not described
    pool = _ReflectionPool(descriptors)
    # `ServerReflection.extend` would not list the reflection services themselves.
    return [
        ServerReflection(_service_names=names, _pool=pool),
        reflection_v1alpha.ServerReflection(_service_names=names, _pool=pool),
    ]
