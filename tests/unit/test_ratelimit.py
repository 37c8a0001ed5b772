"""Token buckets and source tallies: the decisions with the time passed in."""

from __future__ import annotations

import pytest

from mediacore.ratelimit import SourceTally, TokenBuckets


def test_a_bucket_allows_its_burst_then_its_rate() -> None:
    buckets = TokenBuckets(2.0, 4.0, total_rate=1000, total_burst=1000)
    assert [buckets.allow("a", 0.0) for _ in range(6)] == [True] * 4 + [False] * 2
    assert not buckets.allow("a", 0.4)  # 0.8 of a token earned
    assert buckets.allow("a", 0.5)
    assert sum(buckets.allow("a", 100.0) for _ in range(10)) == 4  # refills up to the burst


def test_keys_have_buckets_of_their_own_and_share_the_total() -> None:
    buckets = TokenBuckets(1.0, 2.0, total_rate=1.0, total_burst=3.0)
    assert buckets.allow("a", 0.0) and buckets.allow("a", 0.0) and not buckets.allow("a", 0.0)
    assert buckets.allow("b", 0.0)
    assert not buckets.allow("b", 0.0)  # b has a token left; the total has none
    assert not buckets.allow("c", 0.0)


def test_a_refusal_by_the_total_leaves_the_keys_token() -> None:
    buckets = TokenBuckets(1.0, 1.0, total_rate=1.0, total_burst=1.0)
    assert buckets.allow("a", 0.0)
    assert not buckets.allow("b", 0.0)  # the total refused: b keeps its token
    assert buckets.allow("b", 1.0)


def test_the_table_is_bounded_and_evicts_the_least_recently_used() -> None:
    buckets = TokenBuckets(1.0, 1.0, total_rate=1e9, total_burst=1e9, max_keys=3)
    for key in "abc":
        buckets.allow(key, 0.0)
    buckets.allow("a", 0.0)  # a is used again: b is now the oldest
    buckets.allow("d", 0.0)
    assert len(buckets) == 3 and buckets.evicted == 1
    assert not buckets.allow("a", 0.0)  # a kept its (empty) bucket
    assert buckets.allow("b", 0.0)  # b was evicted: a fresh bucket


@pytest.mark.parametrize("arguments", [(0, 1), (1, 0.5)])
def test_buckets_refuse_nonsense(arguments: tuple[float, float]) -> None:
    with pytest.raises(ValueError):
        TokenBuckets(*arguments, total_rate=1, total_burst=1)


def test_a_tally_announces_new_sources_up_to_its_list_and_sums_the_rest() -> None:
    tally = SourceTally(interval=60, listed=2, max_tracked=3)
    assert tally.due() is None
    assert tally.add("a", 10.0) and not tally.add("a", 11.0)
    assert tally.add("b", 12.0) and not tally.add("c", 13.0)  # the list is full
    assert not tally.add("d", 14.0)  # beyond max_tracked: not told apart
    assert tally.due() == 70.0
    assert tally.flush(69.9) is None
    summary = tally.flush(70.0)
    assert summary is not None
    assert (summary.total, summary.sources, summary.untracked) == (5, 3, 1)
    assert summary.top == (("a", 2), ("b", 1))
    assert (summary.started, summary.ended) == (10.0, 70.0)
    assert tally.due() is None and tally.flush(1000.0) is None


def test_a_window_said_whole_by_its_announcements_needs_no_summary() -> None:
    tally = SourceTally(interval=60, listed=10)
    assert tally.add("a", 0.0) and tally.add("b", 1.0)
    assert tally.flush(60.0) is None
    assert tally.due() is None
    tally.add("a", 61.0)
    assert tally.flush(62.0, force=True) is None  # announced again in a new window


def test_a_tally_starting_at_time_zero_counts_from_there() -> None:
    tally = SourceTally(interval=60, listed=1)
    tally.add("a", 0.0)
    tally.add("a", 1.0)
    summary = tally.flush(60.0)
    assert summary is not None and summary.started == 0.0 and summary.ended == 60.0
