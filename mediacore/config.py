"""Load and validate the TOML config into frozen dataclasses.

The whole file is checked before anything opens a socket, and every problem
is reported at once, each naming the file and the dotted key
(``number[2].ring_timeout``), because an operator fixing a config at 3 a.m.
should not have to restart the server once per typo.
"""

from __future__ import annotations

import ipaddress
import re
import socket
import tomllib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")

Network = ipaddress.IPv4Network | ipaddress.IPv6Network

TRANSPORTS = ("udp", "tcp")
STARTTLS_MODES = ("opportunistic", "required", "off")
FSYNC_MODES = ("record", "batch")
LOG_FORMATS = ("text", "json")
LOG_LEVELS = ("debug", "info", "warning", "error")
#: How a call's media legs latch (mediacore/rtp/engine.py, Latching): ``strict``
#: accepts only the address SDP signalled, ``nat`` latches onto the first
#: source on a signalled host (SDP's or the SIP peer's) and then only that one.
LATCHING_MODES = ("strict", "nat")
#: What an out-of-dialog request from outside ``sip.trusted_sources`` gets.
UNTRUSTED_MODES = ("403", "drop")
#: The longest ``sip.user_agent``: it goes into every message we send.
MAX_USER_AGENT = 200


def host_in_networks(host: str, networks: tuple[Network, ...]) -> bool:
    """Whether the IP literal ``host`` lies in one of ``networks`` (a name: no)."""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    return any(address in network for network in networks)


class ConfigError(Exception):
    """Everything wrong with one config file, one ``file: key: problem`` per line."""

    def __init__(self, source: str, problems: list[str]) -> None:
        self.source = source
        self.problems = problems
        super().__init__("\n".join(f"{source}: {problem}" for problem in problems))


@dataclass(frozen=True)
class ListenAddress:
    transport: str
    host: str
    port: int

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.transport}:{host}:{self.port}"


@dataclass(frozen=True)
class SipTimers:
    """RFC 3261 timer bases in seconds (section 17.1.1.1 and table 4)."""

    t1: float = 0.5
    t2: float = 4.0
    t4: float = 5.0


@dataclass(frozen=True)
class SipLimits:
    """Bounds on what one peer can make us parse or hold."""

    max_message_size: int = 65536
    max_headers: int = 256
    max_line_length: int = 8192


@dataclass(frozen=True)
class SipConfig:
    listen: tuple[ListenAddress, ...] = (
        ListenAddress("udp", "127.0.0.1", 5060),
        ListenAddress("tcp", "127.0.0.1", 5060),
    )
    advertised_address: str = "127.0.0.1"
    trusted_sources: tuple[Network, ...] = (ipaddress.ip_network("127.0.0.0/8"),)
    timers: SipTimers = field(default_factory=SipTimers)
    limits: SipLimits = field(default_factory=SipLimits)
    tcp_idle_timeout: float = 300.0
    #: A TCP peer has this many seconds from the first byte of a message (or
    #: from connecting) to the end of it; a peer trickling bytes is closed.
    tcp_message_timeout: float = 10.0
    #: Inbound TCP connections one source address may hold at once.
    tcp_connections_per_source: int = 32
    #: Inbound TCP connections in all; 0: what the open-file limit leaves
    #: after the RTP port range (host_checks.tcp_connection_budget).
    tcp_max_connections: int = 0
    #: SIGTERM: how long calls in progress may go on before they are ended.
    drain_timeout: float = 30.0
    #: The Server (responses) and User-Agent (requests) header; "" for none.
    #: No version by default: a scanner learns nothing it can look up.
    user_agent: str = "mediacore"
    #: "403": out-of-dialog requests from untrusted sources are answered 403
    #: statelessly, rate-limited; "drop": they are not answered at all.
    untrusted: str = "403"
    #: Stateless 403s a second to one untrusted source address (bursts of
    #: twice that), and to all of them together.
    untrusted_answer_rate: float = 5.0
    untrusted_answer_rate_total: float = 200.0
    #: Carriers' and targets' UDP datagrams get a socket (and receive queue)
    #: of their own, so that a flood cannot crowd them out (sip/steering.py).
    priority_socket: bool = True

    def is_trusted(self, host: str) -> bool:
        return host_in_networks(host, self.trusted_sources)


@dataclass(frozen=True)
class RtpConfig:
    address: str = "127.0.0.1"
    port_range: tuple[int, int] = (20000, 29999)
    inactivity_timeout: float = 30.0
    #: Every leg's latching mode unless its number says otherwise
    #: (``number.media_latching``): one of LATCHING_MODES.
    latching: str = "strict"
    #: nat legs: seconds of silence of the latched source after which a
    #: source on a signalled host may take the leg over; 0: only signalling
    #: (a re-INVITE or UPDATE with new SDP) moves a latch.
    relatch_after: float = 0.0


@dataclass(frozen=True)
class StorageConfig:
    dir: Path = Path("var")
    #: Where prompts are looked up by name; None: the prompts shipped in the
    #: package (mediacore/data/announcements/, rtp.player.default_directory).
    announcements: Path | None = None
    #: MiB kept free for the journal: below it, recordings stop (calls go on
    #: unrecorded, their CDRs say ``disk-full``). 0: record until ENOSPC.
    reserve_mb: float = 64.0


@dataclass(frozen=True)
class RoutingConfig:
    """How dialled numbers are read into E.164 (calls/routing.py, NumberingPlan)."""

    country_code: str = "31"
    national_prefix: str = "0"
    international_prefix: str = "00"


@dataclass(frozen=True)
class RedisConfig:
    url: str
    prefix: str = "mediacore"
    #: ``XADD ... MAXLEN ~`` caps of the streams (0: uncapped); docs/records.md.
    cdr_stream_maxlen: int = 1_000_000
    events_stream_maxlen: int = 100_000


@dataclass(frozen=True)
class HostPort:
    """An ``ADDRESS:PORT`` to listen on (``[::1]:9091`` for IPv6)."""

    host: str
    port: int

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


@dataclass(frozen=True)
class MetricsConfig:
    """``[metrics]``: the HTTP listener for /metrics, /healthz and /readyz."""

    listen: HostPort


@dataclass(frozen=True)
class LogConfig:
    """``[log]``: how log lines look. ``serve --log-level`` overrides ``level``."""

    format: str = "text"
    level: str = "info"


@dataclass(frozen=True)
class RecordsConfig:
    """The records plane: journal durability and rotation, publication, retention.

    ``fsync = "record"`` makes every record durable before it is acknowledged
    or published (records that arrive during one fsync share the next);
    ``"batch"`` fsyncs every ``batch_records`` records or ``batch_ms``
    milliseconds, whichever comes first, so a power cut can lose that much
    (a crash of the process alone loses nothing: the page cache survives it).
    docs/records.md explains each key.
    """

    fsync: str = "record"
    batch_records: int = 100
    batch_ms: float = 200.0
    rotate_mb: int = 64
    rotate_daily: bool = True
    sweep_interval: float = 60.0
    marker_ttl_days: int = 30
    retry_max_delay: float = 10.0
    node: str = field(default_factory=socket.gethostname)
    #: Journal files whose every record is published (and older than this
    #: many days) are removed; 0 keeps them for ever. docs/records.md.
    journal_keep_days: float = 30.0
    #: Without [redis] the journal is the only copy of the CDRs: pruned only if true.
    journal_prune_without_redis: bool = False


@dataclass(frozen=True)
class SmtpConfig:
    host: str = "127.0.0.1"
    port: int = 25
    starttls: str = "opportunistic"
    sender: str = "voicemail@localhost"


@dataclass(frozen=True)
class NumberConfig:
    number: str
    owner: str
    targets: tuple[str, ...]
    ring_timeout: float = 20.0
    record: bool = False
    retention_days: int = 30
    announcement: str | None = None
    voicemail_email: str | None = None
    max_duration: float = 7200.0
    voicemail_max_duration: float = 180.0
    #: This number's calls latch their media so (both legs) instead of
    #: ``rtp.latching``; None: as ``rtp.latching`` says.
    media_latching: str | None = None


@dataclass(frozen=True)
class Config:
    source: str
    sip: SipConfig = field(default_factory=SipConfig)
    rtp: RtpConfig = field(default_factory=RtpConfig)
    storage: StorageConfig = field(default_factory=StorageConfig)
    redis: RedisConfig | None = None
    smtp: SmtpConfig = field(default_factory=SmtpConfig)
    records: RecordsConfig = field(default_factory=RecordsConfig)
    routing: RoutingConfig = field(default_factory=RoutingConfig)
    metrics: MetricsConfig | None = None
    log: LogConfig = field(default_factory=LogConfig)
    numbers: tuple[NumberConfig, ...] = ()

    def number(self, dialled: str) -> NumberConfig | None:
        return next((n for n in self.numbers if n.number == dialled), None)


class _Reader:
    """Walks the parsed TOML, recording problems instead of stopping at the first."""

    def __init__(self) -> None:
        self.problems: list[str] = []
        self._path: list[str] = []

    @contextmanager
    def at(self, key: str) -> Iterator[None]:
        self._path.append(key)
        try:
            yield
        finally:
            self._path.pop()

    def key(self, name: str | None = None) -> str:
        parts = [*self._path, name] if name else self._path
        return ".".join(parts).replace(".[", "[")

    def problem(self, name: str | None, message: str) -> None:
        self.problems.append(f"{self.key(name)}: {message}")

    def unknown_keys(self, table: dict[str, Any], known: set[str]) -> None:
        for name in sorted(set(table) - known):
            self.problem(name, "unknown key")

    def value(
        self,
        table: dict[str, Any],
        name: str,
        kind: type | tuple[type, ...],
        default: T,
        check: Callable[[Any], str | None] | None = None,
    ) -> Any:
        if name not in table:
            return default
        raw = table[name]
        if isinstance(raw, bool) and kind is not bool and bool not in _as_tuple(kind):
            self.problem(name, f"expected {_kind_name(kind)}, got a boolean")
            return default
        if not isinstance(raw, kind):
            self.problem(name, f"expected {_kind_name(kind)}, got {type(raw).__name__}")
            return default
        if check is not None and (message := check(raw)) is not None:
            self.problem(name, message)
            return default
        return raw

    def table(self, document: dict[str, Any], name: str) -> dict[str, Any]:
        raw = document.get(name, {})
        if not isinstance(raw, dict):
            self.problem(name, "expected a table")
            return {}
        return raw


def _as_tuple(kind: type | tuple[type, ...]) -> tuple[type, ...]:
    return kind if isinstance(kind, tuple) else (kind,)


def _kind_name(kind: type | tuple[type, ...]) -> str:
    names = {int: "an integer", float: "a number", str: "a string", bool: "true or false",
             list: "a list", dict: "a table"}
    return " or ".join(names.get(k, k.__name__) for k in _as_tuple(kind))


_NODE_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.:@+-]{0,199}$")


def node_problem(node: str) -> str | None:
    """Why ``node`` cannot be a ``[records] node``: it names dirs below the storage dir."""
    if not node or any(c.isspace() for c in node):
        return "must be non-empty, without spaces"
    if not _NODE_RE.match(node):
        return ("must be usable as a directory name (it names the node's journal dir): "
                "up to 200 letters, digits and . _ - : @ +, not starting with . - : @ +")
    return None


def _positive(value: float) -> str | None:
    return None if value > 0 else "must be greater than 0"


def _not_negative(value: float) -> str | None:
    return None if value >= 0 else "must not be negative"


def _port(value: int) -> str | None:
    return None if 1 <= value <= 65535 else "must be a port number from 1 to 65535"


def _latching_mode(value: str) -> str | None:
    return None if value in LATCHING_MODES else f"must be one of {', '.join(LATCHING_MODES)}"


def _positive_int(value: int) -> str | None:
    return None if value >= 1 else "must be at least 1"


def user_agent_problem(value: str) -> str | None:
    """Why ``value`` cannot be our Server/User-Agent header (None: it can)."""
    if len(value) > MAX_USER_AGENT:
        return f"must be at most {MAX_USER_AGENT} characters"
    if value != value.strip() or not all(" " <= ch <= "~" for ch in value):
        return ("must be printable ASCII without leading or trailing spaces, "
                "e.g. 'mediacore' (empty: no header)")
    return None


def _ip_address(value: str) -> str | None:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return f"{value!r} is not an IP address"
    return None


def parse_host_port(text: str) -> HostPort:
    """``127.0.0.1:9091`` or ``[::1]:9091`` into its parts (ValueError says why not)."""
    if text.startswith("["):
        host, _, port_text = text[1:].partition("]:")
    else:
        host, _, port_text = text.rpartition(":")
    if not host or not port_text.isdigit():
        raise ValueError(f"expected ADDRESS:PORT, got {text!r}")
    if (problem := _ip_address(host)) is not None:
        raise ValueError(problem)
    port = int(port_text)
    if (problem := _port(port)) is not None:
        raise ValueError(f"{text!r}: port {problem}")
    return HostPort(host, port)


def parse_listen(text: str) -> ListenAddress:
    """``udp:127.0.0.1:5060`` or ``tcp:[::1]:5060`` into its parts."""
    transport, _, rest = text.partition(":")
    if transport not in TRANSPORTS:
        raise ValueError(f"transport must be one of {', '.join(TRANSPORTS)} in {text!r}")
    try:
        address = parse_host_port(rest)
    except ValueError as error:
        if "expected ADDRESS:PORT" in str(error):
            raise ValueError(f"expected TRANSPORT:HOST:PORT, got {text!r}") from None
        raise ValueError(str(error).replace(repr(rest), repr(text))) from None
    return ListenAddress(transport, address.host, address.port)


def _read_sip(r: _Reader, table: dict[str, Any]) -> SipConfig:
    default = SipConfig()
    with r.at("sip"):
        r.unknown_keys(table, {"listen", "advertised_address", "trusted_sources", "t1", "t2",
                               "t4", "max_message_size", "max_headers", "max_line_length",
                               "tcp_idle_timeout", "drain_timeout", "tcp_message_timeout",
                               "tcp_connections_per_source", "tcp_max_connections",
                               "user_agent", "untrusted", "untrusted_answer_rate",
                               "untrusted_answer_rate_total", "priority_socket"})
        listen: list[ListenAddress] = []
        for index, item in enumerate(r.value(table, "listen", list, [])):
            with r.at(f"listen[{index}]"):
                if not isinstance(item, str):
                    r.problem(None, "expected a string like 'udp:127.0.0.1:5060'")
                    continue
                try:
                    listen.append(parse_listen(item))
                except ValueError as error:
                    r.problem(None, str(error))
        if table.get("listen") == []:
            r.problem("listen", "must name at least one address")
        networks: list[Network] = []
        for index, item in enumerate(r.value(table, "trusted_sources", list, [])):
            with r.at(f"trusted_sources[{index}]"):
                try:
                    networks.append(ipaddress.ip_network(str(item), strict=False))
                except ValueError:
                    r.problem(None, f"{item!r} is not an address or network (CIDR)")
        timers = SipTimers(
            t1=float(r.value(table, "t1", (int, float), default.timers.t1, _positive)),
            t2=float(r.value(table, "t2", (int, float), default.timers.t2, _positive)),
            t4=float(r.value(table, "t4", (int, float), default.timers.t4, _positive)),
        )
        if timers.t2 < timers.t1:
            r.problem("t2", "must not be smaller than t1")
        limits = SipLimits(
            max_message_size=r.value(table, "max_message_size", int,
                                     default.limits.max_message_size, _positive),
            max_headers=r.value(table, "max_headers", int, default.limits.max_headers,
                                _positive),
            max_line_length=r.value(table, "max_line_length", int,
                                    default.limits.max_line_length, _positive),
        )
        return SipConfig(
            listen=tuple(listen) if "listen" in table else default.listen,
            advertised_address=r.value(table, "advertised_address", str,
                                       default.advertised_address, _ip_address),
            trusted_sources=tuple(networks) if "trusted_sources" in table
            else default.trusted_sources,
            timers=timers,
            limits=limits,
            tcp_idle_timeout=float(r.value(table, "tcp_idle_timeout", (int, float),
                                           default.tcp_idle_timeout, _positive)),
            drain_timeout=float(r.value(table, "drain_timeout", (int, float),
                                        default.drain_timeout,
                                        lambda v: None if v >= 0 else "must not be negative")),
            tcp_message_timeout=float(r.value(table, "tcp_message_timeout", (int, float),
                                              default.tcp_message_timeout, _positive)),
            tcp_connections_per_source=r.value(table, "tcp_connections_per_source", int,
                                               default.tcp_connections_per_source,
                                               _positive_int),
            tcp_max_connections=r.value(table, "tcp_max_connections", int,
                                        default.tcp_max_connections, _not_negative),
            user_agent=r.value(table, "user_agent", str, default.user_agent,
                               user_agent_problem),
            untrusted=_untrusted_mode(r, table, default.untrusted),
            priority_socket=r.value(table, "priority_socket", bool, default.priority_socket),
            untrusted_answer_rate=float(r.value(table, "untrusted_answer_rate", (int, float),
                                                default.untrusted_answer_rate, _positive)),
            untrusted_answer_rate_total=float(r.value(
                table, "untrusted_answer_rate_total", (int, float),
                default.untrusted_answer_rate_total, _positive)),
        )


def _untrusted_mode(r: _Reader, table: dict[str, Any], default: str) -> str:
    """``sip.untrusted``; ``403`` unquoted gets a hint rather than "expected a string"."""
    if table.get("untrusted") == 403 and not isinstance(table["untrusted"], bool):
        r.problem("untrusted", 'must be a string: "403" (quoted) or "drop"')
        return default
    return str(r.value(table, "untrusted", str, default,
                       lambda v: None if v in UNTRUSTED_MODES
                       else 'must be "403" (answer, rate-limited) or "drop" (no answer)'))


def _read_rtp(r: _Reader, table: dict[str, Any]) -> RtpConfig:
    default = RtpConfig()
    with r.at("rtp"):
        r.unknown_keys(table, {"address", "port_range", "inactivity_timeout", "latching",
                               "relatch_after"})
        port_range = default.port_range
        raw = r.value(table, "port_range", list, None)
        if raw is not None:
            if (len(raw) != 2 or not all(isinstance(p, int) and not isinstance(p, bool)
                                         for p in raw)):
                r.problem("port_range", "expected two integers [first, last]")
            elif not (1024 <= raw[0] < raw[1] <= 65535):
                r.problem("port_range", "expected 1024 <= first < last <= 65535")
            elif raw[1] - raw[0] < 3:
                r.problem("port_range", "must hold at least two RTP/RTCP port pairs")
            else:
                port_range = (raw[0], raw[1])
        return RtpConfig(
            address=r.value(table, "address", str, default.address, _ip_address),
            port_range=port_range,
            inactivity_timeout=float(r.value(table, "inactivity_timeout", (int, float),
                                             default.inactivity_timeout, _positive)),
            latching=r.value(table, "latching", str, default.latching, _latching_mode),
            relatch_after=float(r.value(table, "relatch_after", (int, float),
                                        default.relatch_after, _not_negative)),
        )


def _read_redis(r: _Reader, document: dict[str, Any]) -> RedisConfig | None:
    if "redis" not in document:
        return None
    table = r.table(document, "redis")
    with r.at("redis"):
        r.unknown_keys(table, {"url", "prefix", "cdr_stream_maxlen", "events_stream_maxlen"})

        def url_check(value: str) -> str | None:
            schemes = ("redis://", "rediss://", "unix://")
            return None if value.startswith(schemes) else "must start with redis://, " \
                "rediss:// or unix://"

        url = r.value(table, "url", str, None, url_check)
        if "url" not in table:
            r.problem("url", "is required when [redis] is present (remove [redis] to keep "
                      "CDRs in the local journal only)")
        prefix = r.value(table, "prefix", str, "mediacore",
                         lambda v: None if v and ":" not in v else "must be non-empty, no ':'")
        cdr_maxlen = r.value(table, "cdr_stream_maxlen", int, 1_000_000, _not_negative)
        events_maxlen = r.value(table, "events_stream_maxlen", int, 100_000, _not_negative)
        return RedisConfig(url=url, prefix=prefix, cdr_stream_maxlen=cdr_maxlen,
                           events_stream_maxlen=events_maxlen) if url else None


def _read_smtp(r: _Reader, table: dict[str, Any]) -> SmtpConfig:
    default = SmtpConfig()
    with r.at("smtp"):
        r.unknown_keys(table, {"host", "port", "starttls", "sender"})
        return SmtpConfig(
            host=r.value(table, "host", str, default.host),
            port=r.value(table, "port", int, default.port, _port),
            starttls=r.value(table, "starttls", str, default.starttls,
                             lambda v: None if v in STARTTLS_MODES
                             else f"must be one of {', '.join(STARTTLS_MODES)}"),
            sender=r.value(table, "sender", str, default.sender,
                           lambda v: None if "@" in v else "must be an e-mail address"),
        )


def _read_routing(r: _Reader, table: dict[str, Any]) -> RoutingConfig:
    default = RoutingConfig()

    def digits(allow_empty: bool) -> Callable[[str], str | None]:
        def check(value: str) -> str | None:
            if (value or not allow_empty) and not (value.isdigit() and value.isascii()):
                return "must be digits" + (" (or empty)" if allow_empty else "")
            return None
        return check

    with r.at("routing"):
        r.unknown_keys(table, {"country_code", "national_prefix", "international_prefix"})
        return RoutingConfig(
            country_code=r.value(table, "country_code", str, default.country_code,
                                 digits(False)),
            national_prefix=r.value(table, "national_prefix", str, default.national_prefix,
                                    digits(True)),
            international_prefix=r.value(table, "international_prefix", str,
                                         default.international_prefix, digits(False)),
        )


def _read_records(r: _Reader, table: dict[str, Any]) -> RecordsConfig:
    default = RecordsConfig()
    with r.at("records"):
        r.unknown_keys(table, {"fsync", "batch_records", "batch_ms", "rotate_mb",
                               "rotate_daily", "sweep_interval", "marker_ttl_days",
                               "retry_max_delay", "node", "journal_keep_days",
                               "journal_prune_without_redis"})
        return RecordsConfig(
            fsync=r.value(table, "fsync", str, default.fsync,
                          lambda v: None if v in FSYNC_MODES
                          else f"must be one of {', '.join(FSYNC_MODES)}"),
            batch_records=r.value(table, "batch_records", int, default.batch_records,
                                  _positive),
            batch_ms=float(r.value(table, "batch_ms", (int, float), default.batch_ms,
                                   _positive)),
            rotate_mb=r.value(table, "rotate_mb", int, default.rotate_mb, _positive),
            rotate_daily=r.value(table, "rotate_daily", bool, default.rotate_daily),
            sweep_interval=float(r.value(table, "sweep_interval", (int, float),
                                         default.sweep_interval, _positive)),
            marker_ttl_days=r.value(table, "marker_ttl_days", int, default.marker_ttl_days,
                                    _positive),
            retry_max_delay=float(r.value(table, "retry_max_delay", (int, float),
                                          default.retry_max_delay, _positive)),
            node=r.value(table, "node", str, default.node, node_problem),
            journal_keep_days=float(r.value(table, "journal_keep_days", (int, float),
                                            default.journal_keep_days, _not_negative)),
            journal_prune_without_redis=r.value(table, "journal_prune_without_redis", bool,
                                                default.journal_prune_without_redis),
        )


def _read_metrics(r: _Reader, document: dict[str, Any]) -> MetricsConfig | None:
    if "metrics" not in document:
        return None
    table = r.table(document, "metrics")
    with r.at("metrics"):
        r.unknown_keys(table, {"listen"})
        text = r.value(table, "listen", str, None)
        if "listen" not in table:
            r.problem("listen", "is required when [metrics] is present, e.g. "
                      "'127.0.0.1:9091' (remove [metrics] for no metrics listener)")
            return None
        if text is None:
            return None
        try:
            return MetricsConfig(listen=parse_host_port(text))
        except ValueError as error:
            r.problem("listen", str(error))
            return None


def _read_log(r: _Reader, table: dict[str, Any]) -> LogConfig:
    default = LogConfig()
    with r.at("log"):
        r.unknown_keys(table, {"format", "level"})
        return LogConfig(
            format=r.value(table, "format", str, default.format,
                           lambda v: None if v in LOG_FORMATS
                           else f"must be one of {', '.join(LOG_FORMATS)}"),
            level=r.value(table, "level", str, default.level,
                          lambda v: None if v in LOG_LEVELS
                          else f"must be one of {', '.join(LOG_LEVELS)}"),
        )


NUMBER_KEYS = {"number", "owner", "targets", "ring_timeout", "record", "retention_days",
               "announcement", "voicemail_email", "max_duration", "voicemail_max_duration",
               "media_latching"}


def _same_address(a: str, b: str) -> bool:
    try:
        return ipaddress.ip_address(a) == ipaddress.ip_address(b)
    except ValueError:
        return False


def _wildcard(host: str) -> bool:
    return host in ("0.0.0.0", "::")


def target_loop(destination: tuple[str, str, int], sip: SipConfig,
                is_local: Callable[[str], bool] | None = None) -> str | None:
    """Which of our own SIP addresses a target's ``(transport, host, port)`` is, or None.

    A target that is this server makes every call to its number call itself
    (RFC 3261 16.3's loop, in a config). Ours: a ``sip.listen`` address, or
    ``sip.advertised_address`` at a listen port of the same transport (behind
    NAT the advertised address reaches us too); a ``0.0.0.0``/``::`` listener
    takes loopback addresses, and any address ``is_local`` says is this
    host's (the host checks pass a probe; config alone cannot know).
    """
    transport, host, port = destination
    for listen in sip.listen:
        if listen.transport != transport or listen.port != port:
            continue
        where = f"sip.listen {listen}"
        if _same_address(host, listen.host):
            return f"is this server ({where})"
        if _same_address(host, sip.advertised_address):
            return f"is this server (sip.advertised_address {sip.advertised_address} at {where})"
        if _wildcard(listen.host) and _same_family(host, listen.host) and (
                ipaddress.ip_address(host).is_loopback
                or (is_local is not None and is_local(host))):
            return f"is this server ({host} is an address of this host, and {where})"
    return None


def _same_family(host: str, wildcard: str) -> bool:
    try:
        return ipaddress.ip_address(host).version == ipaddress.ip_address(wildcard).version
    except ValueError:
        return False


def target_destination(target: str) -> tuple[str, str, int]:
    """Where calls to a ``[[number]] targets`` entry go; ValueError says why nowhere.

    The host must be a unicast IP address (no DNS on the signalling path,
    docs/contracts.md), one a request can be sent to.
    """
    from mediacore.sip.loops import uri_destination
    from mediacore.sip.uri import ParseError, SipURI, parse_uri

    try:
        uri = parse_uri(target)
    except ParseError as error:
        raise ValueError(f"not a SIP URI: {error.reason}") from None
    if not isinstance(uri, SipURI):
        raise ValueError("must be a SIP URI (sip:... or sips:...)")
    destination = uri_destination(uri)
    host = destination[1]
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(f"host {host!r} must be an IP address (targets are not looked "
                         "up in DNS)") from None
    if address.is_unspecified or address.is_multicast or host == "255.255.255.255":
        raise ValueError(f"host {host} is not an address a call can be sent to")
    return destination


def _read_targets(r: _Reader, table: dict[str, Any], sip: SipConfig) -> list[Any]:
    targets = r.value(table, "targets", list, [])
    for position, target in enumerate(targets):
        with r.at(f"targets[{position}]"):
            if not isinstance(target, str) or not target.startswith(("sip:", "sips:")):
                r.problem(None, "must be a SIP URI (sip:... or sips:...)")
                continue
            try:
                destination = target_destination(target)
            except ValueError as error:
                r.problem(None, f"{target}: {error}")
                continue
            loop = target_loop(destination, sip)
            if loop is not None:
                r.problem(None, f"{target} {loop}: every call to the number would call "
                          "itself")
    return targets


def _read_number(r: _Reader, table: Any, index: int,
                 sip: SipConfig | None = None) -> NumberConfig | None:
    with r.at(f"number[{index}]"):
        if not isinstance(table, dict):
            r.problem(None, "expected a table")
            return None
        r.unknown_keys(table, NUMBER_KEYS)
        for required in ("number", "owner"):
            if required not in table:
                r.problem(required, "is required")
        number = r.value(table, "number", str, "",
                         lambda v: None if v.lstrip("+").isdigit()
                         else "must be digits with an optional leading '+'")
        targets = _read_targets(r, table, sip or SipConfig())
        voicemail = r.value(table, "voicemail_email", str, None,
                            lambda v: None if "@" in v else "must be an e-mail address")
        if not targets and voicemail is None and "targets" in table:
            r.problem("targets", "is empty and there is no voicemail_email: calls would "
                      "have nowhere to go")
        announcement = r.value(table, "announcement", str, None,
                               lambda v: None if v and "/" not in v and not v.startswith(".")
                               else "must be a prompt name, not a path")
        return NumberConfig(
            number=number,
            owner=r.value(table, "owner", str, ""),
            targets=tuple(t for t in targets if isinstance(t, str)),
            ring_timeout=float(r.value(table, "ring_timeout", (int, float), 20.0, _positive)),
            record=r.value(table, "record", bool, False),
            retention_days=r.value(table, "retention_days", int, 30,
                                   lambda v: None if v >= 0 else "must not be negative"),
            announcement=announcement,
            voicemail_email=voicemail,
            voicemail_max_duration=float(r.value(table, "voicemail_max_duration",
                                                 (int, float), 180.0, _positive)),
            max_duration=float(r.value(table, "max_duration", (int, float), 7200.0,
                                       _positive)),
            media_latching=r.value(table, "media_latching", str, None, _latching_mode),
        )


def parse_config(document: dict[str, Any], source: str, base_dir: Path | None = None) -> Config:
    """Validate an already-parsed TOML document; ``source`` names it in errors.

    Relative paths (``storage.dir``) are taken relative to ``base_dir``, the
    directory of the config file, so a config means the same thing whatever
    the working directory of the process that loads it.
    """
    r = _Reader()
    r.unknown_keys(document, {"sip", "rtp", "storage", "redis", "smtp", "records", "routing",
                              "metrics", "log", "number"})
    sip = _read_sip(r, r.table(document, "sip"))
    rtp = _read_rtp(r, r.table(document, "rtp"))
    storage_table = r.table(document, "storage")
    with r.at("storage"):
        r.unknown_keys(storage_table, {"dir", "announcements", "reserve_mb"})
        storage_dir = Path(r.value(storage_table, "dir", str, "var"))
        announcements_text = r.value(storage_table, "announcements", str, None)
        reserve_mb = float(r.value(storage_table, "reserve_mb", (int, float),
                                   StorageConfig.reserve_mb, _not_negative))
    if not storage_dir.is_absolute() and base_dir is not None:
        storage_dir = base_dir / storage_dir
    announcements = None if announcements_text is None else Path(announcements_text)
    if announcements is not None and not announcements.is_absolute() and base_dir is not None:
        announcements = base_dir / announcements
    routing = _read_routing(r, r.table(document, "routing"))
    redis = _read_redis(r, document)
    smtp = _read_smtp(r, r.table(document, "smtp"))
    records = _read_records(r, r.table(document, "records"))
    metrics = _read_metrics(r, document)
    log = _read_log(r, r.table(document, "log"))
    raw_numbers = document.get("number", [])
    numbers: list[NumberConfig] = []
    if not isinstance(raw_numbers, list):
        r.problem("number", "expected an array of tables ([[number]])")
        raw_numbers = []
    seen: dict[str, int] = {}
    for index, raw in enumerate(raw_numbers):
        parsed = _read_number(r, raw, index, sip)
        if parsed is None:
            continue
        if parsed.number in seen and parsed.number:
            with r.at(f"number[{index}]"):
                r.problem("number", f"{parsed.number} is already defined in "
                          f"number[{seen[parsed.number]}]")
        seen.setdefault(parsed.number, index)
        numbers.append(parsed)
    if r.problems:
        raise ConfigError(source, r.problems)
    return Config(
        source=source,
        sip=sip,
        rtp=rtp,
        storage=StorageConfig(dir=storage_dir, announcements=announcements,
                              reserve_mb=reserve_mb),
        routing=routing,
        redis=redis,
        smtp=smtp,
        records=records,
        metrics=metrics,
        log=log,
        numbers=tuple(numbers),
    )


def load_config(path: str | Path, base_dir: Path | None = None) -> Config:
    """Read and validate one TOML file; raises ConfigError naming the file.

    Relative paths in it are taken relative to the file's directory unless
    ``base_dir`` says otherwise (the bundled example uses the working dir).
    """
    path = Path(path)
    try:
        with path.open("rb") as handle:
            document = tomllib.load(handle)
    except FileNotFoundError:
        raise ConfigError(str(path), ["file not found"]) from None
    except OSError as error:
        raise ConfigError(str(path), [f"cannot read: {error.strerror}"]) from None
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(str(path), [f"not valid TOML: {error}"]) from None
    return parse_config(document, str(path), base_dir=base_dir or path.resolve().parent)


EXAMPLE_CONFIG = "example.toml"


def example_config_path() -> Path:
    """The config bundled with the package: 127.0.0.1, journal only, no Redis."""
    return Path(str(resources.files("mediacore") / "data" / EXAMPLE_CONFIG))
