"""The `peat-sync` command: `serve`, the client commands, and `bench`.

Only this package builds argument parsers; every option of every command is a row of the
table in `options`.
"""
