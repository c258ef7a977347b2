"""Logging a node's story: the core records entries (`swarm.core.story`), its drivers log them.

The node shell and the simulator call `log_new_story` after every step, so each entry reaches the log
once, at the level the core gave it, under the `swarm.core` logger (a filter on that name, as `swarm sim`
sets, still applies). An entry that carries a caught exception is logged with its traceback.
"""

from __future__ import annotations

import logging
from types import MappingProxyType

from swarm.core.node import NodeMachine

__all__ = ["log_new_story"]

log = logging.getLogger("swarm.core")

_LEVELS = MappingProxyType(
    {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}
)


def log_new_story(machine: NodeMachine) -> None:
    """Log the story entries `machine` recorded since the last call, and say how many were lost if a
    step recorded more than its buffer holds."""
    entries, lost = machine.take_story()
    if lost:
        log.warning("%d story entries were pushed out of the buffer before they were logged", lost)
    for entry in entries:
        log.log(_LEVELS[entry.level], "%s", entry.message, exc_info=entry.exc)
