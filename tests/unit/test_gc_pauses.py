"""The garbage collector's pauses measured, and the start-up heap frozen (observability.gc_pauses).

CPython behaviour relied on: https://docs.python.org/3/library/gc.html (`gc.callbacks` is called
with "start" and "stop" around each collection and the generation in `info`; `gc.freeze` moves
every tracked object into a permanent generation that collections ignore).
"""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from observability.gc_pauses import GcPauses, freeze_heap
from observability.metrics import Metrics


@pytest.fixture
def unfrozen() -> Iterator[None]:
    yield
    gc.unfreeze()  # the test process goes on collecting as before


def test_every_collection_is_timed_with_its_generation_until_removed() -> None:
    metrics = Metrics()
    pauses = GcPauses(metrics.observe_gc_pause)
    pauses.install()
    pauses.install()  # once only
    try:
        assert gc.callbacks.count(pauses._callback) == 1
        gc.collect(0)
        gc.collect(2)
    finally:
        pauses.remove()
    assert pauses._callback not in gc.callbacks
    count = metrics.registry.get_sample_value
    assert count("polyd_gc_pause_seconds_count", {"generation": "0"}) == 1
    assert count("polyd_gc_pause_seconds_count", {"generation": "2"}) == 1
    full = count("polyd_gc_pause_seconds_sum", {"generation": "2"})
    assert full is not None and full > 0
    gc.collect(2)  # removed: not counted
    assert count("polyd_gc_pause_seconds_count", {"generation": "2"}) == 1


def test_a_frozen_heap_is_out_of_every_generation(unfrozen: None) -> None:
    heap = [[i, {"k": i}] for i in range(1000)]
    gc.collect()
    assert any(o is heap for o in gc.get_objects(2))  # survivors: the oldest generation
    frozen, took = freeze_heap()
    assert frozen == gc.get_freeze_count() >= len(heap)
    assert took > 0
    # Frozen: in no generation, so no collection walks it (gc.get_objects(g) lists what
    # generation g's collection would traverse).
    assert not any(o is heap for g in (0, 1, 2) for o in gc.get_objects(g))
    gc.unfreeze()
    assert any(o is heap for o in gc.get_objects(2))
