"""`peat-sync bench`: how fast the feed is, measured side by side with its own ceiling.

The bench starts `peat-sync serve` on a temporary data dir for each scenario (or uses a
running deployment given with --addr), puts the load on it from worker processes that use the
official grpcio client, and measures the same load against a bare grpclib server on plain
asyncio in the same run: the baseline that the figures are divided by. It reports events/s,
put-to-delivery latency (p50/p99/max), the server's RSS and CPU per event, and each target
with the figure measured and whether it was met. The shared scenario starts its own
nats-server and sidecars in shared mode, and divides their figures by those of nats-py alone
against the same nats-server. With --peer redis, it measures Redis Streams on a redis-server
of its own beside peat-sync, with the same documents and one client each.

Modules: `run` (a run: the scenarios selected, progress, the report), `scenarios` (one module
per scenario), `workers` (the load processes), `servers` (the servers and /proc readers),
`launcher` (`peat-sync serve` and the baseline as child processes), `baseline` (the bare
grpclib server), `nats_servers` (nats-server as child processes), `nats_ceiling` (nats-py
alone, the shared scenario's ceiling), `redis_servers` (redis-server as a child process),
`redis_peer` (redis-py alone, the Redis Streams peer), `messages` (the bench's documents and
change types), `report` (stats, tables, JSON and the plot); and, only data for the command
line's help, `sizes` and `targets`. The command line itself is peat_sync.cli.bench.
"""
