"""Log set-up: one readable line per event, on stderr."""

from __future__ import annotations

import logging
import time


def configure_logging(level: str) -> None:
    handler = logging.StreamHandler()
    formatter = logging.Formatter(
        "%(asctime)s.%(msecs)03dZ %(levelname)-7s %(name)s: %(message)s",
        datefmt="%Y-%m-%dT%H:%M:%S",
    )
    formatter.converter = time.gmtime
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # grpclib logs every failed handler with a traceback at error level; our own service
    # logs what matters, so keep the library to warnings of its own.
    logging.getLogger("grpclib").setLevel(max(logging.WARNING, root.level))
