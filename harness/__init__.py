"""What checks and measures peat-sync from outside, kept beside the product and never shipped
with it: the soak (`python -m harness.soak`), which kills the server under load and then
checks that nothing acknowledged or delivered was lost; and `follower_rates.py`
(`python harness/follower_rates.py --help`), which measures what `peat-sync bench` does not.

Everything here drives a real `peat-sync serve` through `peat_sync.bench.launcher` and talks
to it as clients do: through the client library, or the wire format of `peat_sync.wire`.
"""
