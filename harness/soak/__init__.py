"""The soak (`python -m harness.soak`): a long run of writers and followers against a server
that is killed with SIGKILL and restarted at random moments, then a check that no
acknowledged write and no event was lost, duplicated or reordered.

Modules, one role each: `command` (the command line), `ledger` (what the writers were told),
`feed` (what each follower saw), `checker` (the final verdict) and `run` (the asyncio run
that ties them together, with the server from `peat_sync.bench.launcher`).
"""
