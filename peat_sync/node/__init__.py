"""The trio node: storage, the single-writer producer, the replay log and the subscriptions.
In shared mode (`NodeConfig.shared`), the replica of `peat_sync.shared` takes the producer's
place.

It can be embedded in any trio program without the gRPC server::

    async with open_node(NodeConfig(data_dir=Path("data"))) as node:
        sequence = await node.put("tasks", "t1", '{"state": "new"}')
        with node.subscribe(["tasks"], since=0) as subscription:
            events = await subscription.next_batch(100)
"""

from peat_sync.node.errors import (
    InvalidRequest,
    LimitExceeded,
    NodeClosed,
    QueueFull,
    RequestError,
    StoreUnavailable,
    WriteRefused,
)
from peat_sync.node.events import ChangeEvent
from peat_sync.node.node import Node, NodeConfig, open_node
from peat_sync.node.subscription import Subscription

__all__ = [
    "ChangeEvent",
    "InvalidRequest",
    "LimitExceeded",
    "Node",
    "NodeClosed",
    "NodeConfig",
    "QueueFull",
    "RequestError",
    "StoreUnavailable",
    "Subscription",
    "WriteRefused",
    "open_node",
]
