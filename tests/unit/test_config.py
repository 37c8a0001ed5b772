"""Config validation: every problem reported at once, naming file and key."""

from __future__ import annotations

import ipaddress
import socket
import tomllib
from pathlib import Path

import pytest

from mediacore.config import (
    ConfigError,
    ListenAddress,
    example_config_path,
    load_config,
    parse_config,
    parse_listen,
)


def problems(text: str) -> list[str]:
    with pytest.raises(ConfigError) as error:
        parse_config(tomllib.loads(text), "test.toml")
    assert str(error.value).startswith("test.toml: ")
    return error.value.problems


def test_empty_document_is_the_embedded_defaults() -> None:
    config = parse_config({}, "empty.toml")
    assert config.sip.listen == (
        ListenAddress("udp", "127.0.0.1", 5060), ListenAddress("tcp", "127.0.0.1", 5060)
    )
    assert config.redis is None
    assert config.sip.timers.t1 == 0.5
    assert config.numbers == ()


def test_bundled_example_is_valid_and_records() -> None:
    config = load_config(example_config_path())
    number = config.number("+31900123456")
    assert number is not None
    assert number.record and number.announcement == "recording-notice"
    assert config.redis is None  # the embedded defaults need no Redis


def test_relative_storage_dir_is_relative_to_the_config_file(tmp_path: Path) -> None:
    path = tmp_path / "conf" / "m.toml"
    path.parent.mkdir()
    path.write_text('[storage]\ndir = "data"\n')
    assert load_config(path).storage.dir == tmp_path / "conf" / "data"
    assert load_config(path, base_dir=tmp_path).storage.dir == tmp_path / "data"


def test_all_problems_are_reported_together() -> None:
    found = problems(
        """
        [sip]
        listen = ["udp:1.2.3:5060", "sctp:127.0.0.1:5060"]
        t1 = -1
        colour = "blue"
        [rtp]
        port_range = [30000, 20000]
        [[number]]
        owner = "acme"
        targets = ["tel:+3120"]
        ring_timeout = true
        """
    )
    assert found == [
        "sip.colour: unknown key",
        "sip.listen[0]: '1.2.3' is not an IP address",
        "sip.listen[1]: transport must be one of udp, tcp in 'sctp:127.0.0.1:5060'",
        "sip.t1: must be greater than 0",
        "rtp.port_range: expected 1024 <= first < last <= 65535",
        "number[0].number: is required",
        "number[0].targets[0]: must be a SIP URI (sip:... or sips:...)",
        "number[0].ring_timeout: expected an integer or a number, got a boolean",
    ]


def test_duplicate_numbers_are_refused() -> None:
    assert problems(
        """
        [[number]]
        number = "+3190011"
        owner = "a"
        targets = ["sip:a@127.0.0.1:5070"]
        [[number]]
        number = "+3190011"
        owner = "b"
        targets = ["sip:b@127.0.0.1:5070"]
        """
    ) == ["number[1].number: +3190011 is already defined in number[0]"]


def test_redis_section_needs_a_url() -> None:
    assert problems("[redis]\nprefix = 'x'\n") == [
        "redis.url: is required when [redis] is present (remove [redis] to keep CDRs in "
        "the local journal only)"
    ]


def test_trusted_sources_accept_hosts_and_networks() -> None:
    config = parse_config(
        tomllib.loads('[sip]\ntrusted_sources = ["10.1.2.3", "192.0.2.0/24", "::1"]\n'),
        "t.toml",
    )
    assert config.sip.trusted_sources[0] == ipaddress.ip_network("10.1.2.3/32")
    assert config.sip.is_trusted("192.0.2.77")
    assert config.sip.is_trusted("::1")
    assert not config.sip.is_trusted("127.0.0.1")
    assert not config.sip.is_trusted("not-an-address")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("udp:127.0.0.1:5060", ListenAddress("udp", "127.0.0.1", 5060)),
        ("tcp:[::1]:5080", ListenAddress("tcp", "::1", 5080)),
    ],
)
def test_parse_listen(text: str, expected: ListenAddress) -> None:
    assert parse_listen(text) == expected
    assert parse_listen(str(expected)) == expected


@pytest.mark.parametrize("text", ["udp:127.0.0.1", "udp:127.0.0.1:0", "udp:host:5060", "x"])
def test_parse_listen_rejects(text: str) -> None:
    with pytest.raises(ValueError):
        parse_listen(text)


def test_unreadable_files_are_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="file not found"):
        load_config(tmp_path / "missing.toml")
    broken = tmp_path / "broken.toml"
    broken.write_text("[sip\n")
    with pytest.raises(ConfigError, match=r"broken.toml: not valid TOML"):
        load_config(broken)


def test_records_defaults_journal_every_record() -> None:
    records = parse_config({}, "empty.toml").records
    assert (records.fsync, records.batch_records, records.batch_ms) == ("record", 100, 200.0)
    assert (records.rotate_mb, records.rotate_daily) == (64, True)
    assert (records.sweep_interval, records.marker_ttl_days) == (60.0, 30)
    assert records.node == socket.gethostname()


def test_records_section_is_read() -> None:
    records = parse_config(tomllib.loads(
        """
        [records]
        fsync = "batch"
        batch_records = 50
        batch_ms = 20
        rotate_mb = 8
        rotate_daily = false
        sweep_interval = 300
        marker_ttl_days = 90
        retry_max_delay = 2.5
        node = "media-3"
        """), "r.toml").records
    assert (records.fsync, records.batch_records, records.batch_ms) == ("batch", 50, 20.0)
    assert (records.rotate_mb, records.rotate_daily, records.sweep_interval) == (8, False, 300.0)
    assert (records.marker_ttl_days, records.retry_max_delay, records.node) == (90, 2.5,
                                                                                "media-3")


def test_journal_pruning_without_redis_is_the_operators_choice() -> None:
    assert parse_config({}, "empty.toml").records.journal_prune_without_redis is False
    records = parse_config(tomllib.loads(
        "[records]\njournal_keep_days = 7\njournal_prune_without_redis = true\n"),
        "r.toml").records
    assert (records.journal_keep_days, records.journal_prune_without_redis) == (7.0, True)
    assert problems('[records]\njournal_prune_without_redis = "yes"\n') == [
        "records.journal_prune_without_redis: expected true or false, got str"]


def test_records_problems_name_their_keys() -> None:
    assert problems(
        """
        [records]
        fsync = "sometimes"
        batch_records = 0
        batch_ms = "soon"
        rotate_mb = -1
        rotate_daily = "yes"
        sweep_interval = 0
        marker_ttl_days = 1.5
        node = "media 3"
        colour = "blue"
        """
    ) == [
        "records.colour: unknown key",
        "records.fsync: must be one of record, batch",
        "records.batch_records: must be greater than 0",
        "records.batch_ms: expected an integer or a number, got str",
        "records.rotate_mb: must be greater than 0",
        "records.rotate_daily: expected true or false, got str",
        "records.sweep_interval: must be greater than 0",
        "records.marker_ttl_days: expected an integer, got float",
        "records.node: must be non-empty, without spaces",
    ]


def test_routing_and_announcements(tmp_path: Path) -> None:
    path = tmp_path / "m.toml"
    path.write_text('[routing]\ncountry_code = "44"\nnational_prefix = ""\n'
                    '[storage]\nannouncements = "prompts"\n')
    config = load_config(path)
    assert (config.routing.country_code, config.routing.national_prefix) == ("44", "")
    assert config.storage.announcements == tmp_path / "prompts"
    assert problems('[routing]\ninternational_prefix = "+"\n') == [
        "routing.international_prefix: must be digits"]


def test_voicemail_max_duration_per_number() -> None:
    config = parse_config(tomllib.loads(
        '[[number]]\nnumber = "+31900123456"\nowner = "a"\nvoicemail_email = "a@b.c"\n'
        'targets = []\nvoicemail_max_duration = 60\n'), "v.toml")
    assert config.numbers[0].voicemail_max_duration == 60.0


def test_media_latching_defaults_to_strict() -> None:
    config = parse_config({"number": [{"number": "+31900123456", "owner": "acme"}]}, "t.toml")
    assert (config.rtp.latching, config.rtp.relatch_after) == ("strict", 0.0)
    assert config.numbers[0].media_latching is None


def test_media_latching_keys_are_read() -> None:
    config = parse_config(tomllib.loads("""
        [rtp]
        latching = "nat"
        relatch_after = 10
        [[number]]
        number = "+31900123456"
        owner = "acme"
        media_latching = "strict"
        """), "t.toml")
    assert (config.rtp.latching, config.rtp.relatch_after) == ("nat", 10.0)
    assert config.numbers[0].media_latching == "strict"


def test_media_latching_problems_name_their_keys() -> None:
    assert problems("""
        [rtp]
        latching = "loose"
        relatch_after = -1
        [[number]]
        number = "+31900123456"
        owner = "acme"
        media_latching = "symmetric"
        [[number]]
        number = "+31900123457"
        owner = "acme"
        media_latching = true
        """) == [
        "rtp.latching: must be one of strict, nat",
        "rtp.relatch_after: must not be negative",
        "number[0].media_latching: must be one of strict, nat",
        "number[1].media_latching: expected a string, got a boolean",
    ]


def test_hostile_network_keys_have_safe_defaults() -> None:
    sip = parse_config({}, "t").sip
    assert sip.user_agent == "mediacore"  # no version for a scanner to look up
    assert sip.untrusted == "403" and sip.untrusted_answer_rate == 5.0
    assert sip.untrusted_answer_rate_total == 200.0 and sip.priority_socket
    assert sip.tcp_message_timeout == 10.0 and sip.tcp_connections_per_source == 32
    assert sip.tcp_max_connections == 0  # derived from the open-file limit


def test_hostile_network_keys_are_read() -> None:
    sip = parse_config({"sip": {
        "user_agent": "", "untrusted": "drop", "untrusted_answer_rate": 1,
        "untrusted_answer_rate_total": 50.5, "priority_socket": False,
        "tcp_message_timeout": 4, "tcp_connections_per_source": 2,
        "tcp_max_connections": 100}}, "t").sip
    assert (sip.user_agent, sip.untrusted, sip.untrusted_answer_rate) == ("", "drop", 1.0)
    assert sip.untrusted_answer_rate_total == 50.5 and not sip.priority_socket
    assert (sip.tcp_message_timeout, sip.tcp_connections_per_source,
            sip.tcp_max_connections) == (4.0, 2, 100)


def test_hostile_network_keys_are_validated_by_name() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config({"sip": {
            "user_agent": "mediacore/1.0\r\nX-Injected: 1", "untrusted": 403,
            "untrusted_answer_rate": 0, "untrusted_answer_rate_total": -1,
            "priority_socket": "yes", "tcp_message_timeout": 0,
            "tcp_connections_per_source": 0, "tcp_max_connections": -5}}, "f.toml")
    problems = caught.value.problems
    for key in ("user_agent", "untrusted", "untrusted_answer_rate",
                "untrusted_answer_rate_total", "priority_socket", "tcp_message_timeout",
                "tcp_connections_per_source", "tcp_max_connections"):
        assert any(p.startswith(f"sip.{key}: ") for p in problems), (key, problems)
    assert 'sip.untrusted: must be a string: "403" (quoted) or "drop"' in problems
    with pytest.raises(ConfigError) as caught:
        parse_config({"sip": {"untrusted": "reject", "user_agent": "x" * 201}}, "f.toml")
    assert caught.value.problems == [
        "sip.user_agent: must be at most 200 characters",
        'sip.untrusted: must be "403" (answer, rate-limited) or "drop" (no answer)']
