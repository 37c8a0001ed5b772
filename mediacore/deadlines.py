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
    def __init__(self) -> None:
        self._heap: list[tuple[float, int, T]] = []
        self._sequence = itertools.count()

    def schedule(self, item: T) -> None:
        """Note ``item``'s current deadline (call after anything that may move it)."""
        deadline = item.next_deadline()
        if deadline is not None and not item.done:
            heapq.heappush(self._heap, (deadline, next(self._sequence), item))

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
