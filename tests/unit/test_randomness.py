"""The process's pool of OS randomness: every byte used once, values in range."""

from __future__ import annotations

import pytest

from mediacore.randomness import RandomPool


def test_hex_gives_two_digits_per_byte_and_never_repeats_a_byte_of_the_pool() -> None:
    pool = RandomPool(size=64)
    tokens = [pool.hex(10) for _ in range(100)]  # crosses 15 refills
    assert all(len(t) == 20 and int(t, 16) >= 0 for t in tokens)
    assert len(set(tokens)) == len(tokens)


def test_a_request_larger_than_the_pool_is_served_whole() -> None:
    pool = RandomPool(size=16)
    assert len(pool.take(100)) == 100
    assert len(pool.take(3)) == 3


@pytest.mark.parametrize("nbits", [1, 7, 16, 31, 32, 33])
def test_bits_stay_below_two_to_the_n_and_reach_the_top_bit(nbits: int) -> None:
    pool = RandomPool()
    values = [pool.bits(nbits) for _ in range(2000)]
    assert all(0 <= v < 2**nbits for v in values)
    # The top bit is set about half the time: the value is not cut short.
    top = sum(v >> (nbits - 1) for v in values)
    assert 700 < top < 1300
