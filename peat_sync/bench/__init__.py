"""`peat-sync bench`: how fast the feed is, measured side by side with its own ceiling.

The bench starts `peat-sync serve` on a temporary data dir for each scenario (or uses a
running deployment given with --addr), puts the load on it from worker processes that use the
official grpcio client, and measures the same load against a bare grpclib server on plain
asyncio in the same run: the baseline that the figures are divided by. It reports events/s,
put-to-delivery latency (p50/p99/max), the server's RSS and CPU per event, and each target
of issue 5 with the figure measured and whether it was met.

Modules: `command` (the command line and the run), `scenarios` (one function per scenario),
`workers` (the load processes), `servers` (the servers and /proc readers), `baseline` (the
bare grpclib server), `messages` (the document layout and message classes), `report` (stats,
tables, JSON and the plot).
"""
