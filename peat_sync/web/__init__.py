"""The HTTP listener: the whole API in the Connect protocol and in gRPC-Web, for browsers and
Connect clients, and the live page at `/`.

Served by hypercorn (HTTP/1.1 and h2c, or TLS) on the asyncio side, beside grpclib, with the
Connect runtime (`connectrpc`) speaking the protocols. The handlers are the gRPC service's own
(`peat_sync.server.service`); `endpoints` adapts them, `codecs` encodes the messages as
Connect expects, and `asgi` routes requests, serves the page, and holds the limits that HTTP
needs of its own: request bytes, stalled sends and CORS.
"""
