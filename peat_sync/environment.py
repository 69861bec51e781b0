"""The environment variables that configure peat-sync, and their upstream names.

Every variable is named `PEAT_SIDECAR_<NAME>`. Upstream now reads its settings from
`PEAT_NODE_<NAME>`, so that name is accepted too, for a deployment written for upstream. When
both are set to different values, neither is taken: the setting is refused, naming both.

Shared by the command line (`peat_sync.cli.options`) and the client library, so it imports
nothing of either.
"""

from __future__ import annotations

from collections.abc import Mapping

PREFIX = "PEAT_SIDECAR_"
UPSTREAM_PREFIX = "PEAT_NODE_"


class ConflictingVariables(ValueError):
    """A variable and its upstream name are both set, to different values."""


def upstream_name(variable: str) -> str:
    """The upstream name of `variable`, a PEAT_SIDECAR_* name."""
    return UPSTREAM_PREFIX + variable.removeprefix(PREFIX)


def lookup(variable: str, environ: Mapping[str, str]) -> tuple[str, str] | None:
    """`(value, the name it was set under)` of `variable`, a PEAT_SIDECAR_* name, set under
    that name or its upstream one; None when neither is set. Raises ConflictingVariables
    when both are set to different values."""
    alias = upstream_name(variable)
    value, upstream = environ.get(variable), environ.get(alias)
    if value is not None and upstream is not None and value != upstream:
        raise ConflictingVariables(
            f"{variable}={value!r} and {alias}={upstream!r} set the same option to different"
            " values: unset one of them"
        )
    if value is not None:
        return value, variable
    if upstream is not None:
        return upstream, alias
    return None


def is_ours(variable: str) -> bool:
    """Whether `variable` is one of peat-sync's, under either name."""
    return variable.startswith((PREFIX, UPSTREAM_PREFIX))
