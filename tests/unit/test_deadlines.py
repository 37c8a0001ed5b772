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
