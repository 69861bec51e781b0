"""The soak (`python -m harness.soak`): a long run of writers and followers against a server
that is killed with SIGKILL and restarted at random moments, then a check that no
acknowledged write and no event was lost, duplicated or reordered.

Modules, one role each: `command` (the command line), `ledger` (what the writers were told),
`feed` (what each follower saw), `sightings` (where each write was seen, to catch one applied
twice), `checker` (the final verdict), `run` (the asyncio run that ties them together, with
the server from `peat_sync.bench.launcher`) and `fleet` (the run of shared mode, `--shared`:
sidecars on a three-node NATS cluster from `peat_sync.bench.nats_servers`, killed in turn).
"""
