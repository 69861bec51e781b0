"""The client library's tests against the real server.

The library is asyncio-flavoured, so each test is a sync function that runs an asyncio
scenario under a deadline (`run_scenario`); pytest-trio never sees a coroutine. Servers listen
on a unix socket (`start_unix_server`) wherever a test restarts one: the address then stays the
same, as it does for a real sidecar, and the library's reconnection finds the new process.
"""
