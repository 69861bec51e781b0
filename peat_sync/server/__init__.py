"""The gRPC server: grpclib on asyncio, inside trio_asyncio, in front of the trio node.

The layers: `serve` (trio) runs the node and, through `bridge`, the asyncio side: the
`GrpcServer`, the `SidecarService` handlers and the standard services. `bridge` is the only
module that imports both trio and asyncio.
"""
