"""The lazy deadline heap: order, stale entries skipped, ended items let go."""

from __future__ import annotations

import gc
import weakref
from dataclasses import dataclass

from mediacore.deadlines import DeadlineHeap


@dataclass(eq=False)
class Item:
    deadline: float | None
    done: bool = False

    def next_deadline(self) -> float | None:
        return self.deadline


def test_items_come_due_in_deadline_order_and_moved_deadlines_count() -> None:
    heap: DeadlineHeap[Item] = DeadlineHeap()
    a, b, c = Item(3.0), Item(1.0), Item(2.0)
    for item in (a, b, c):
        heap.schedule(item)
    c.deadline = 5.0  # moved later: the old entry is stale
    heap.schedule(c)
    assert heap.next_deadline() == 1.0
    assert list(heap.due(4.0)) == [b, a]
    assert heap.next_deadline() == 5.0
    c.done = True
    assert heap.next_deadline() is None


def test_ended_items_are_not_kept_alive_by_far_deadlines() -> None:
    """A call's max_duration entry must not keep the call in memory for hours."""
    heap: DeadlineHeap[Item] = DeadlineHeap()
    refs = []
    for _ in range(1000):
        item = Item(7200.0)
        heap.schedule(item)
        item.done = True
        refs.append(weakref.ref(item))
        del item
    gc.collect()
    assert len(heap) < 200
    assert sum(ref() is not None for ref in refs) < 200


def test_an_unchanged_deadline_is_not_pushed_again() -> None:
    """Most events leave a call's deadline where it was: no new heap entry."""
    heap: DeadlineHeap[Item] = DeadlineHeap()
    item = Item(7200.0)
    for _ in range(100):
        heap.schedule(item)
    assert len(heap) == 1
    item.deadline = 3.0
    heap.schedule(item)
    item.deadline = 7200.0  # back where it was: the old entry is valid again
    heap.schedule(item)
    assert heap.next_deadline() == 7200.0
    assert list(heap.due(7200.0)) == [item]
    heap.schedule(item)  # after it came due, the same deadline is a new entry
    assert list(heap.due(7200.0)) == [item]


def test_rescheduling_while_iterating_due_items_compacts_safely() -> None:
    """A consumer of due() reschedules each item; a compaction in between must
    not make the iteration skip or repeat anything."""
    heap: DeadlineHeap[Item] = DeadlineHeap()
    items = [Item(float(i)) for i in range(200)]
    for item in items:
        heap.schedule(item)
    seen = []
    for item in heap.due(99.5):
        seen.append(item)
        item.deadline = 1000.0 + len(seen)  # moved: stale entries pile up
        heap.schedule(item)
    assert seen == items[:100]
    assert heap.next_deadline() == 100.0
