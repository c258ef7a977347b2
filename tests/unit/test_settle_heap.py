"""A started node hides what it built to start from the garbage collector and collects less often."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from swarm.runtime.shell import GC_YOUNG_THRESHOLD, settle_heap


@pytest.fixture
def restored_gc() -> Iterator[None]:
    threshold = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*threshold)


def test_what_exists_at_start_is_frozen_and_young_collections_are_rarer(restored_gc: None) -> None:
    built_to_start = [[i] for i in range(1000)]
    _, middle, old = gc.get_threshold()
    settle_heap()
    made_later = [1]
    watched = {id(x) for x in gc.get_objects()}  # the generations a collection walks
    assert gc.get_freeze_count() >= len(built_to_start)
    assert id(built_to_start[0]) not in watched and id(made_later) in watched
    assert gc.get_threshold() == (GC_YOUNG_THRESHOLD, middle, old)
