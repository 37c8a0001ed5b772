"""Checks of a config that need more than the TOML: numbers and prompts.

``config.py`` validates each key on its own; these need the call plane's
knowledge: two entries may be the same number once normalised to E.164
(``0900123456`` and ``+31900123456``), and a number's announcement must
name a prompt that exists. ``mediacore check-config`` and ``serve`` (before
any socket opens) and SIGHUP reloads all run them, and the host checks of
``host_checks.py`` (storage writable, addresses local, the port range fits).
"""

from __future__ import annotations

from dataclasses import asdict

from mediacore.calls.call import DEFAULT_RECORDING_NOTICE, VOICEMAIL_PROMPTS
from mediacore.calls.routing import NumberingPlan, NumberPlan
from mediacore.config import Config, target_destination, target_loop
from mediacore.host_checks import host_problems, is_local_address
from mediacore.rtp.player import PromptLibrary


def numbering_plan(config: Config) -> NumberingPlan:
    return NumberingPlan(**asdict(config.routing))


def problems(config: Config) -> list[str]:
    """Everything wrong, one ``key: problem`` per entry (empty when all is well)."""
    found: list[str] = []
    try:
        plan = numbering_plan(config)
    except ValueError as error:
        return [f"routing: {error}"]
    try:
        NumberPlan(config.numbers, plan)
    except ValueError as error:
        found.append(f"number: {error}")
    prompts = PromptLibrary(config.storage.announcements)
    for index, number in enumerate(config.numbers):
        needed: list[tuple[str, str]] = []
        if number.announcement or number.record:
            needed.append(("announcement", number.announcement or DEFAULT_RECORDING_NOTICE))
        if number.voicemail_email:
            needed += [("voicemail_email", name) for name in VOICEMAIL_PROMPTS]
        for key, name in needed:
            try:
                prompts.path_of(name)
            except (OSError, ValueError) as error:
                found.append(f"number[{index}].{key}: {error}")
    return found + _wildcard_loops(config) + host_problems(config)


def _wildcard_loops(config: Config) -> list[str]:
    """Targets that are this host's own address at a port we listen on with
    ``0.0.0.0``/``::``: config.py cannot know the host's addresses; this asks it.
    (The targets config.py refused already are not looked at again.)"""
    if not any(listen.host in ("0.0.0.0", "::") for listen in config.sip.listen):
        return []
    found: list[str] = []
    for index, number in enumerate(config.numbers):
        for position, target in enumerate(number.targets):
            try:
                destination = target_destination(target)
            except ValueError:
                continue
            if target_loop(destination, config.sip) is not None:
                continue
            loop = target_loop(destination, config.sip, is_local=is_local_address)
            if loop is not None:
                found.append(f"number[{index}].targets[{position}]: {target} {loop}: every "
                             "call to the number would call itself")
    return found

