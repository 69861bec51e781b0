"""Upstream's two `peat.sidecar.v1` protos, compiled for the tests by grpc_tools: the first
one (upstream_first.proto) and today's (upstream_today.proto), each in a descriptor pool of
its own.

Both declare the package `peat.sidecar.v1`, as does proto/sidecar.proto, whose stubs the
`grpcio_api` fixture imports into the protobuf runtime's default descriptor pool. A generated
`_pb2` module registers its file in that default pool, and the pool refuses a second file
that defines the same symbols. So the `_pb2` side is built from what protoc compiled (its
`--descriptor_set_out`) into a pool of its own, by the same two builder calls a generated
`_pb2` module makes; the generated `_pb2_grpc` module, the stub, is loaded unchanged, with
that module standing in for the `_pb2` it imports. Every client then lives in this one test
process, so a test can drive upstream's clients and this proto's side by side.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

from google.protobuf import descriptor_pb2, descriptor_pool
from google.protobuf.internal import builder

from tests.helpers.clients import GrpcioApi

UPSTREAM_DIR = Path(__file__).resolve().parent
FIRST = "upstream_first"
TODAY = "upstream_today"


def compile_upstream(name: str, out: Path) -> GrpcioApi:
    """`{name}_pb2` and `{name}_pb2_grpc`, compiled from tests/upstream/{name}.proto into
    `out`, with the messages in a descriptor pool of their own."""
    from grpc_tools import protoc

    descriptors = out / f"{name}.binpb"
    status = protoc.main(
        [
            "grpc_tools.protoc",
            f"-I{UPSTREAM_DIR}",
            f"--grpc_python_out={out}",
            f"--descriptor_set_out={descriptors}",
            str(UPSTREAM_DIR / f"{name}.proto"),
        ]
    )
    assert status == 0, f"protoc failed to compile tests/upstream/{name}.proto"
    (file_proto,) = descriptor_pb2.FileDescriptorSet.FromString(descriptors.read_bytes()).file
    pool = descriptor_pool.DescriptorPool()
    file = pool.AddSerializedFile(file_proto.SerializeToString())
    pb2 = ModuleType(f"{name}_pb2")
    builder.BuildMessageAndEnumDescriptors(file, pb2.__dict__)
    builder.BuildTopDescriptorsAndMessages(file, pb2.__name__, pb2.__dict__)
    return pb2, _load_stub(out / f"{name}_pb2_grpc.py", pb2)


def _load_stub(path: Path, pb2: ModuleType) -> ModuleType:
    """The generated stub module at `path`, importing `pb2` under its own name."""
    spec = importlib.util.spec_from_file_location(path.stem, path)
    assert spec is not None
    assert spec.loader is not None
    stub = importlib.util.module_from_spec(spec)
    sys.modules[pb2.__name__] = pb2
    try:
        spec.loader.exec_module(stub)
    finally:
        del sys.modules[pb2.__name__]
    return stub
