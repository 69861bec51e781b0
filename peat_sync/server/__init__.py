"""The gRPC server: grpclib on asyncio, inside trio_asyncio, in front of the trio node."""

from peat_sync.server.serve import ListenError, serve

__all__ = ["ListenError", "serve"]
