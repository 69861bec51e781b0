"""What checks and measures peat-sync from outside, kept beside the product and never shipped
with it: the soak (`python -m harness.soak`), which kills the server under load and checks
that nothing acknowledged or delivered was lost; and measurement scripts for what
`peat-sync bench` does not measure (`python harness/<script>.py --help`).

Everything here drives a real `peat-sync serve` through `peat_sync.bench.launcher` and talks
to it as clients do: the client library, or the wire format of `peat_sync.wire`.
"""
