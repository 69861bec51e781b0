"""Shared mode: several sidecars, one document space, over a NATS JetStream stream.

`config` says how to reach the stream; `subjects` maps documents to subjects; `jetstream`
is the NATS connection (asyncio); `writer` publishes writes (asyncio); `replica` applies the
stream to the node's store and takes the producer's place in the node (trio).
"""
