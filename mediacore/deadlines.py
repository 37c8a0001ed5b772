"""A heap of things with deadlines, for sans-IO state machines run by one timer.

Transactions and calls each know their own next deadline, which moves as
they change. Rather than re-sorting on every change, an entry is pushed
whenever a deadline may have moved and stale entries are skipped when they
surface: each event costs O(log n), never a scan of everything open, and
the edge arms one timer for :meth:`DeadlineHeap.next_deadline`.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Iterator
from typing import Generic, Protocol, TypeVar


class HasDeadline(Protocol):
    @property
    def done(self) -> bool: ...

    def next_deadline(self) -> float | None: ...


T = TypeVar("T", bound=HasDeadline)


class DeadlineHeap(Generic[T]):
    """Lazy deadlines, compacted now and then.

    A stale entry keeps its item alive until it surfaces, and a call's
    max_duration deadline surfaces hours later: without compaction every
    ended call would stay in memory that long. So when the heap has grown
    to twice its size at the last compaction, stale entries are dropped in
    one O(n) pass, amortised over the pushes that made them.
    """

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, T]] = []
        self._sequence = itertools.count()
        self._compact_at = 64

    def __len__(self) -> int:
        return len(self._heap)

    def schedule(self, item: T) -> None:
        """Note ``item``'s current deadline (call after anything that may move it)."""
        deadline = item.next_deadline()
        if deadline is not None and not item.done:
            heapq.heappush(self._heap, (deadline, next(self._sequence), item))
        if len(self._heap) >= self._compact_at:
            self.compact()

    def compact(self) -> None:
        """Drop every stale entry: done items, and deadlines that have moved."""
        self._heap = [entry for entry in self._heap
                      if not entry[2].done and entry[2].next_deadline() == entry[0]]
        heapq.heapify(self._heap)
        self._compact_at = max(64, 2 * len(self._heap))

    def next_deadline(self) -> float | None:
        heap = self._heap
        while heap:
            deadline, _, item = heap[0]
            if not item.done and item.next_deadline() == deadline:
                return deadline
            heapq.heappop(heap)
        return None

    def due(self, now: float) -> Iterator[T]:
        """Every item whose deadline has come, earliest first, each once per entry."""
        heap = self._heap
        while heap and heap[0][0] <= now:
            deadline, _, item = heapq.heappop(heap)
            if not item.done and item.next_deadline() == deadline:
                yield item
