"""sd_notify without sockets: the environment systemd passes, the datagrams, the interval."""

from __future__ import annotations

import pytest

from mediacore.sdnotify import Notifier, format_message, notify_address, watchdog_interval


def test_a_path_and_an_abstract_name_are_addresses() -> None:
    assert notify_address({"NOTIFY_SOCKET": "/run/systemd/notify"}) == "/run/systemd/notify"
    assert notify_address({"NOTIFY_SOCKET": "@/org/freedesktop/systemd1/notify/42"}) == (
        "\0/org/freedesktop/systemd1/notify/42")


@pytest.mark.parametrize("value", [None, "", "@", "relative/path", "vsock:2:1234"])
def test_no_usable_notify_socket_means_no_notifications(value: str | None) -> None:
    env = {} if value is None else {"NOTIFY_SOCKET": value}
    assert notify_address(env) is None
    notifier = Notifier.from_environment(env, pid=1)
    assert not notifier.enabled
    notifier.ready("listening")  # all no-ops, and none raises
    notifier.reloading()
    notifier.stopping("draining")
    notifier.close()


def test_messages_are_key_value_lines_in_order() -> None:
    assert format_message(READY=1, STATUS="listening on udp:127.0.0.1:5060") == (
        b"READY=1\nSTATUS=listening on udp:127.0.0.1:5060\n")
    assert format_message(WATCHDOG=1) == b"WATCHDOG=1\n"
    assert format_message(RELOADING=1, MONOTONIC_USEC=123456789) == (
        b"RELOADING=1\nMONOTONIC_USEC=123456789\n")


def test_a_newline_in_a_value_cannot_smuggle_in_another_assignment() -> None:
    message = format_message(STATUS="reload refused:\nREADY=1\r\nSTOPPING=1")
    assert message == b"STATUS=reload refused: READY=1 STOPPING=1\n"
    assert message.count(b"\n") == 1


@pytest.mark.parametrize("key", ["ready", "STATUS=X", "A B", ""])
def test_keys_must_be_upper_case_names(key: str) -> None:
    with pytest.raises(ValueError, match="key"):
        format_message(**{key: "1"})
    with pytest.raises(ValueError, match="at least one"):
        format_message()


def test_the_watchdog_pings_at_half_the_timeout() -> None:
    assert watchdog_interval({"WATCHDOG_USEC": "20000000"}, pid=7) == 10.0
    assert watchdog_interval({"WATCHDOG_USEC": "3000000", "WATCHDOG_PID": "7"}, pid=7) == 1.5
    assert watchdog_interval({"WATCHDOG_USEC": "1"}, pid=7) == 0.0000005


@pytest.mark.parametrize("env", [
    {},                                              # no WatchdogSec=
    {"WATCHDOG_USEC": "0"},
    {"WATCHDOG_USEC": "-5"},
    {"WATCHDOG_USEC": "ten seconds"},
    {"WATCHDOG_USEC": "20000000", "WATCHDOG_PID": "8"},   # meant for another process
    {"WATCHDOG_USEC": "20000000", "WATCHDOG_PID": "x"},
])
def test_no_watchdog_unless_asked_for_this_process(env: dict[str, str]) -> None:
    assert watchdog_interval(env, pid=7) is None
