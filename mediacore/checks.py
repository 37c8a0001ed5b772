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
from mediacore.config import Config
from mediacore.host_checks import host_problems
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
    return found + host_problems(config)
