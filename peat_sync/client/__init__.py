"""The peat-sync client library (asyncio-flavoured; from trio, cross with
`peat_sync.bridge`).

    async with Client("127.0.0.1:50051") as client:
        sequence = await client.put("commands", "c1", {"status": "pending"})
        async with client.mirror(["commands"]) as mirror:
            await mirror.wait_for(sequence)
            print(mirror.documents["commands"]["c1"])
"""

from peat_sync.client.client import (
    ADDRESS_ENV,
    DEFAULT_ADDRESS,
    Client,
    Document,
    default_address,
)
from peat_sync.client.copy import AppliedChange, ConsistentCopy
from peat_sync.client.errors import ClientError, PreconditionFailed, Rejected, Unavailable
from peat_sync.client.events import ChangeType, Event, ResyncReason
from peat_sync.client.mirror import Mirror
from peat_sync.client.subscription import Backoff, ResilientSubscription

__all__ = [
    "ADDRESS_ENV",
    "DEFAULT_ADDRESS",
    "AppliedChange",
    "Backoff",
    "ChangeType",
    "Client",
    "ClientError",
    "ConsistentCopy",
    "Document",
    "Event",
    "Mirror",
    "PreconditionFailed",
    "Rejected",
    "ResilientSubscription",
    "ResyncReason",
    "Unavailable",
    "default_address",
]
