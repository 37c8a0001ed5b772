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
        # The deadline each item has a live entry for. Most events leave an
        # item's deadline where it was (a call's is its max_duration for
        # hours): re-pushing it every time made half the heap stale entries
        # and a compaction every few hundred messages.
        self._pushed: dict[T, float] = {}

    def __len__(self) -> int:
        return len(self._heap)

    def schedule(self, item: T) -> None:
        """Note ``item``'s current deadline (call after anything that may move it)."""
        deadline = item.next_deadline()
        if deadline is None or item.done or self._pushed.get(item) == deadline:
            return
        self._pushed[item] = deadline
        heapq.heappush(self._heap, (deadline, next(self._sequence), item))
        if len(self._heap) >= self._compact_at:
            self.compact()

    def compact(self) -> None:
        """Drop every stale entry: done items, and deadlines that have moved."""
        # In place: due() may be iterating while its consumer reschedules.
        self._heap[:] = [entry for entry in self._heap
                         if not entry[2].done and entry[2].next_deadline() == entry[0]]
        heapq.heapify(self._heap)
        self._pushed = {item: deadline for deadline, _, item in self._heap}
        self._compact_at = max(64, 2 * len(self._heap))

    def next_deadline(self) -> float | None:
        heap = self._heap
        while heap:
            deadline, _, item = heap[0]
            if not item.done and item.next_deadline() == deadline:
                return deadline
            self._pop()
        return None

    def due(self, now: float) -> Iterator[T]:
        """Every item whose deadline has come, earliest first, once per deadline.

        An item whose deadline moved away and back has two entries for it;
        it is yielded for the first only.
        """
        heap = self._heap
        yielded: set[tuple[int, float]] = set()
        while heap and heap[0][0] <= now:
            deadline, item = self._pop()
            if not item.done and item.next_deadline() == deadline \
                    and (id(item), deadline) not in yielded:
                yielded.add((id(item), deadline))
                yield item

    def _pop(self) -> tuple[float, T]:
        deadline, _, item = heapq.heappop(self._heap)
        if self._pushed.get(item) == deadline:
            del self._pushed[item]
        return deadline, item
