"""Collection configs: what deleting a document of a collection does, set per collection.

A config is a JSON document of the reserved collection `_peat.collection_configs`, keyed by
the collection it configures, written through the node's single writer like any document.
So it gets a sequence, survives restarts, reaches the subscribers that follow that collection
(or all collections), and in shared mode travels through the stream to every sidecar, with
no second replication path. Clients read it as a document but never write it: the server
writes every collection whose name starts with `_peat.`.

`CollectionConfigs` is the node's view of them, kept current by the writer (the producer,
or in shared mode the replica) as it commits each change of the reserved collection, so that
the policies are enforced in memory on the write path. The enforcement itself lives in the
node (deletes refused), `soft_delete` (deletes made puts), `retention` (tombstones) and
`expiry` (removals the server makes).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import trio

from peat_sync.generated.peat.sidecar.v1 import DeletionPolicy
from peat_sync.node.errors import InvalidRequest
from peat_sync.node.validation import check_name, excerpt
from peat_sync.store import Change, StoredDocument

log = logging.getLogger("peat_sync.collection_configs")

# Collections whose names start with this belong to the server: clients read them only.
RESERVED_PREFIX = "_peat."
CONFIGS_COLLECTION = f"{RESERVED_PREFIX}collection_configs"
# TOMBSTONE's retention when `tombstone_ttl_secs` is unset: upstream's default, 168 hours.
DEFAULT_TOMBSTONE_TTL_SECS = 168 * 3600
# A TTL beyond a century is a mistake (a value in milliseconds, say), not a policy.
MAX_TTL_SECS = 100 * 365 * 24 * 3600

_KNOWN_POLICIES = tuple(DeletionPolicy.__members__.values())
# The policies whose documents the server removes on its own, after soft_delete_ttl_secs.
_EXPIRING = (DeletionPolicy.SOFT_DELETE, DeletionPolicy.IMPLICIT_TTL)


def reserved(collection: str) -> InvalidRequest:
    """The error of a client's write to a collection of the server."""
    return InvalidRequest(
        f"collection {excerpt(collection)} is reserved for the server (names starting with"
        f" {RESERVED_PREFIX!r}): write documents to another collection; collection configs"
        " are set with SetCollectionConfig"
    )


@dataclass(frozen=True, slots=True)
class CollectionConfig:
    """A collection's deletion policy and its TTLs, in seconds (None: unset).

    - SOFT_DELETE: a delete rewrites the document with `"_deleted": true`; soft-deleted
      documents are removed, with a DELETE event, `soft_delete_ttl_secs` after that write
      (kept for good when it is unset).
    - TOMBSTONE: deletes as without a config, their tombstones kept `tombstone_ttl_secs`
      (default 168 hours) rather than `--tombstone-retention`.
    - IMPLICIT_TTL: a document not written for `soft_delete_ttl_secs` (required) is removed,
      with a DELETE event.
    - IMMUTABLE: deletes are refused.
    - UNSPECIFIED: as a collection without a config (setting it undoes a policy).

    `tombstone_ttl_secs`, when set, is the collection's tombstone retention under any policy.
    """

    collection: str
    deletion_policy: DeletionPolicy
    soft_delete_ttl_secs: int | None = None
    tombstone_ttl_secs: int | None = None

    def check(self) -> None:
        """Raise `InvalidRequest`, saying what to change, unless this config can be set."""
        check_name("config.collection", self.collection)
        if self.collection.startswith(RESERVED_PREFIX):
            raise InvalidRequest(
                f"config.collection {excerpt(self.collection)} is the server's own (names"
                f" starting with {RESERVED_PREFIX!r}): it takes no config"
            )
        policy = self.deletion_policy
        if policy not in _KNOWN_POLICIES:
            allowed = ", ".join(f"{member.value} ({member.name})" for member in _KNOWN_POLICIES)
            raise InvalidRequest(
                f"config.deletion_policy is {int(policy)}, which is not a DeletionPolicy;"
                f" use one of {allowed}"
            )
        for name in ("soft_delete_ttl_secs", "tombstone_ttl_secs"):
            value = getattr(self, name)
            if value is not None and not 1 <= value <= MAX_TTL_SECS:
                raise InvalidRequest(
                    f"config.{name} is {value}: give a number of seconds from 1 to"
                    f" {MAX_TTL_SECS:,} (100 years), or leave it unset"
                )
        if self.soft_delete_ttl_secs is not None and policy not in _EXPIRING:
            raise InvalidRequest(
                f"config.soft_delete_ttl_secs is set, but the policy is {policy.name}: it is"
                " how long SOFT_DELETE keeps a soft-deleted document, and IMPLICIT_TTL an"
                " unwritten one; leave it unset"
            )
        if policy == DeletionPolicy.IMPLICIT_TTL and self.soft_delete_ttl_secs is None:
            raise InvalidRequest(
                "config.soft_delete_ttl_secs is required with IMPLICIT_TTL: the seconds a"
                " document lives after its last write"
            )

    @property
    def lifetime(self) -> int | None:
        """Seconds after its last write that the server removes a document (SOFT_DELETE: a
        soft-deleted one), or None when it never does."""
        return self.soft_delete_ttl_secs if self.deletion_policy in _EXPIRING else None

    @property
    def tombstone_retention(self) -> float | None:
        """Seconds the collection keeps its tombstones; None: the server's retention."""
        if self.tombstone_ttl_secs is not None:
            return float(self.tombstone_ttl_secs)
        if self.deletion_policy == DeletionPolicy.TOMBSTONE:
            return float(DEFAULT_TOMBSTONE_TTL_SECS)
        return None

    def to_json(self) -> str:
        """The stored form, as the typed collections store messages: proto field names,
        the enum as an integer, unset TTLs as null."""
        return json.dumps(
            {
                "collection": self.collection,
                "deletion_policy": int(self.deletion_policy),
                "soft_delete_ttl_secs": self.soft_delete_ttl_secs,
                "tombstone_ttl_secs": self.tombstone_ttl_secs,
            },
            separators=(",", ":"),
        )

    @classmethod
    def from_document(cls, doc_id: str, json_data: str) -> CollectionConfig:
        """The config a stored document holds; ValueError if it holds none."""
        document = json.loads(json_data)
        if not isinstance(document, dict):
            raise ValueError("not a JSON object")
        policy = document.get("deletion_policy")
        if not isinstance(policy, int) or isinstance(policy, bool):
            raise ValueError(f"deletion_policy is {policy!r}, not an integer")
        return cls(
            doc_id,
            DeletionPolicy(policy),
            _ttl(document, "soft_delete_ttl_secs"),
            _ttl(document, "tombstone_ttl_secs"),
        )


def _ttl(document: dict[str, Any], name: str) -> int | None:
    value = document.get(name)
    if value is not None and (not isinstance(value, int) or isinstance(value, bool)):
        raise ValueError(f"{name} is {value!r}, not an integer")
    return value


class CollectionConfigs:
    """The configs in effect on this node, by collection."""

    def __init__(self) -> None:
        self._configs: dict[str, CollectionConfig] = {}
        # Collections by what a delete does, looked up on every delete.
        self.immutable: frozenset[str] = frozenset()
        self.soft_deleting: frozenset[str] = frozenset()
        self._changed = trio.Event()

    def get(self, collection: str) -> CollectionConfig | None:
        return self._configs.get(collection)

    def all(self) -> list[CollectionConfig]:
        """Every config, by collection name."""
        return [self._configs[name] for name in sorted(self._configs)]

    def expiring(self) -> list[CollectionConfig]:
        """The configs under which the server removes documents on its own."""
        return [config for config in self.all() if config.lifetime is not None]

    def tombstone_retentions(self) -> dict[str, float]:
        """The collections whose tombstones are kept for a time of their own, in seconds."""
        return {
            config.collection: retention
            for config in self.all()
            if (retention := config.tombstone_retention) is not None
        }

    def load(self, documents: Iterable[StoredDocument]) -> None:
        """Start from the configs stored in the reserved collection."""
        for document in documents:
            self._set(document.doc_id, document.json_data)
        self._update()

    def committed(self, changes: Sequence[Change | None]) -> None:
        """Follow changes the writer committed: those of the reserved collection update the
        configs. Called for every commit, so it does no more than compare names."""
        seen = False
        for change in changes:
            if change is not None and change.collection == CONFIGS_COLLECTION:
                self._set(change.doc_id, change.json_data)
                seen = True
        if seen:
            self._update()

    def emptied(self) -> None:
        """The store was emptied (shared mode, to follow a new stream)."""
        self._configs.clear()
        self._update()

    async def wait_changed(self) -> None:
        """Trio-flavoured: return once the configs change."""
        await self._changed.wait()

    def _set(self, collection: str, json_data: str | None) -> None:
        if json_data is None:
            self._configs.pop(collection, None)
            return
        try:
            config = CollectionConfig.from_document(collection, json_data)
        except ValueError as exc:
            # Only servers write it; a newer release may store what this one cannot read.
            log.warning(
                "the collection config of %s is not one this server reads (%s): the collection"
                " is served as without a config",
                excerpt(collection),
                exc,
            )
            self._configs.pop(collection, None)
            return
        self._configs[collection] = config

    def _update(self) -> None:
        configs = self._configs.values()
        self.immutable = frozenset(
            config.collection
            for config in configs
            if config.deletion_policy == DeletionPolicy.IMMUTABLE
        )
        self.soft_deleting = frozenset(
            config.collection
            for config in configs
            if config.deletion_policy == DeletionPolicy.SOFT_DELETE
        )
        self._changed.set()
        self._changed = trio.Event()
