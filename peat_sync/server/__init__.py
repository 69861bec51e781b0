"""The gRPC server: grpclib on asyncio, inside trio_asyncio, in front of the trio node.

Nothing is imported here: importing trio_asyncio changes how asyncio runs, and `codec` must
stay usable without that (the bare-grpclib benchmark baseline imports it).
"""
