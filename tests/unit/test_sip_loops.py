"""Loop tokens (mediacore.sip.loops): what we mark on outbound INVITEs, found again inbound."""

from __future__ import annotations

from mediacore.sip import loops
from mediacore.sip import message as sip

KEY = loops.node_key("core1", "192.0.2.10", "5060")


def request(*, vias: tuple[str, ...] = ("SIP/2.0/UDP 198.51.100.20:5060;branch=z9hG4bKc1",),
            marker: str | None = None) -> sip.Request:
    text = "INVITE sip:+31900123456@192.0.2.10 SIP/2.0\r\n"
    text += "".join(f"Via: {via}\r\n" for via in vias)
    if marker is not None:
        text += f"{loops.LOOP_HEADER}: {marker}\r\n"
    text += ("From: <sip:+31612345678@carrier.example>;tag=a\r\n"
             "To: <sip:+31900123456@192.0.2.10>\r\nCall-ID: c1\r\nCSeq: 1 INVITE\r\n"
             "Max-Forwards: 69\r\nContent-Length: 0\r\n\r\n")
    parsed = sip.parse(text.encode())
    assert isinstance(parsed, sip.Request)
    return parsed


def test_tokens_differ_by_node_and_by_number_and_are_stable() -> None:
    token = loops.loop_token(KEY, "+31900123456")
    assert token == loops.loop_token(KEY, "+31900123456")
    assert token != loops.loop_token(KEY, "+31900654321")
    other_process = loops.node_key("core2", "192.0.2.10", "5062")
    assert token != loops.loop_token(other_process, "+31900123456")
    assert len(token) == loops.TOKEN_LENGTH and token.isalnum()


def test_a_branch_carries_the_token_and_is_unique_per_transaction() -> None:
    token = loops.loop_token(KEY, "+31900123456")
    first, second = loops.loop_branch(token), loops.loop_branch(token)
    assert first != second
    assert first.startswith("z9hG4bK") and token in first


def test_an_invite_of_ours_coming_back_directly_has_looped() -> None:
    token = loops.loop_token(KEY, "+31900123456")
    ours = f"SIP/2.0/UDP 192.0.2.10:5060;branch={loops.loop_branch(token)};rport"
    assert loops.has_looped(request(vias=(ours,)), token)


def test_an_invite_of_ours_behind_a_proxys_via_has_looped() -> None:
    token = loops.loop_token(KEY, "+31900123456")
    ours = f"SIP/2.0/UDP 192.0.2.10:5060;branch={loops.loop_branch(token)}"
    proxy = "SIP/2.0/UDP 198.51.100.20:5060;branch=z9hG4bKproxy1"
    assert loops.has_looped(request(vias=(proxy, ours)), token)


def test_the_header_is_found_when_the_vias_are_gone() -> None:
    """What another B2BUA (or another mediacore node) passes on."""
    token = loops.loop_token(KEY, "+31900123456")
    assert loops.has_looped(request(marker=f"0123456789ab, {token}"), token)
    assert not loops.has_looped(request(marker="0123456789ab"), token)


def test_a_spiral_to_another_number_has_not_looped() -> None:
    """Number A's target is number B on this node: B's call goes on."""
    token_a = loops.loop_token(KEY, "+31900123456")
    token_b = loops.loop_token(KEY, "+31900654321")
    ours = f"SIP/2.0/UDP 192.0.2.10:5060;branch={loops.loop_branch(token_a)}"
    spiral = request(vias=(ours,), marker=token_a)
    assert not loops.has_looped(spiral, token_b)
    # B's onward INVITE carries both tokens: back at A, it stops.
    assert loops.onward_marker(spiral, token_b) == f"{token_a}, {token_b}"


def test_a_plain_carrier_invite_has_not_looped() -> None:
    token = loops.loop_token(KEY, "+31900123456")
    assert not loops.has_looped(request(), token)
    assert loops.onward_marker(request(), token) == token


def test_the_onward_marker_is_bounded_and_drops_what_is_not_a_token() -> None:
    token = loops.loop_token(KEY, "+31900123456")
    junk = ", ".join([f"{n:012x}" for n in range(40)] + ["not-a-token", "x" * 500, "ABCDEF012345"])
    marker = loops.onward_marker(request(marker=junk), token)
    parts = marker.split(", ")
    assert len(parts) == loops.MAX_TOKENS and parts[-1] == token
    assert all(len(part) == loops.TOKEN_LENGTH for part in parts)
    # Ours is not repeated when it came in already (that request is refused anyway).
    assert loops.onward_marker(request(marker=token), token) == token
