"""A short, deterministic run of the SIP mutation fuzzer (tests/fuzz/sip_fuzz.py).

The full run (100,000 cases) is documented there; this keeps every
mutation kind exercised on every test run.
"""

from __future__ import annotations

import pytest

from tests.fuzz.sip_fuzz import run


@pytest.mark.parametrize("seed", [1, 2])
def test_mutated_messages_never_raise_past_the_parser_or_the_endpoint(seed: int) -> None:
    stats = run(cases=1500, seed=seed)
    assert stats.failures == [], stats.failures[0]
    assert stats.parsed > 0 and stats.refused  # both paths were exercised
