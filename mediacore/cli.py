"""The ``mediacore`` command: the operator's face of the server.

Subcommands follow the contract in docs/contracts.md (``serve``,
``check-config``, ``cdr list``, ``cdr export``, ``retention sweep``). A
subcommand whose plane is not built yet says so on stderr and exits with
``EXIT_NOT_BUILT``, so that a script calling it never mistakes silence for
success.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from mediacore import __version__
from mediacore.config import ConfigError, load_config

EXIT_NOT_BUILT = 3

DESCRIPTION = """\
mediacore: a SIP/RTP media server (B2BUA) for service numbers.

It answers carriers' calls for 0800/0900/local numbers, plays the owner's
announcements, forwards the call to the owner's targets, relays and records
the audio, takes voicemail, and reports a CDR for every call to a local
journal and to Redis.
"""

EPILOG = """\
examples:
  mediacore serve                      run on the bundled example config (127.0.0.1)
  mediacore serve -c /etc/mediacore/mediacore.toml
  mediacore check-config /etc/mediacore/mediacore.toml
  mediacore cdr list --format csv      CDRs from the local journal
  mediacore retention sweep            delete recordings whose retention ended
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mediacore",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"mediacore {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    serve = commands.add_parser(
        "serve",
        help="run the server",
        description="Run the SIP/RTP server until SIGTERM (which drains calls) or SIGINT.",
    )
    serve.add_argument(
        "-c", "--config", metavar="FILE",
        help="TOML config file (default: the bundled example config on 127.0.0.1)",
    )

    check = commands.add_parser(
        "check-config",
        help="validate a config file and exit",
        description="Load and validate FILE; print every error with the key it concerns.",
    )
    check.add_argument("file", metavar="FILE")

    cdr = commands.add_parser("cdr", help="read call detail records from the local journal")
    cdr_commands = cdr.add_subparsers(dest="cdr_command", metavar="ACTION", required=True)
    cdr_list = cdr_commands.add_parser("list", help="list CDRs")
    cdr_list.add_argument("--format", choices=("csv", "json"), default="csv")
    cdr_list.add_argument("-c", "--config", metavar="FILE")
    cdr_export = cdr_commands.add_parser(
        "export", help="write an owner's call history (CSV, JSON) and recordings (WAV)"
    )
    cdr_export.add_argument("--owner", required=True)
    cdr_export.add_argument("--out", required=True, metavar="DIR")
    cdr_export.add_argument("-c", "--config", metavar="FILE")

    retention = commands.add_parser("retention", help="recording retention")
    retention_commands = retention.add_subparsers(
        dest="retention_command", metavar="ACTION", required=True
    )
    sweep = retention_commands.add_parser("sweep", help="delete expired recordings now")
    sweep.add_argument("-c", "--config", metavar="FILE")
    return parser


def check_config(path: str) -> int:
    """Validate a config the way ``serve`` would, before any socket opens."""
    try:
        config = load_config(path)
    except ConfigError as error:
        print(error, file=sys.stderr)
        return 1
    listen = ", ".join(str(address) for address in config.sip.listen)
    print(f"{path}: ok ({len(config.numbers)} numbers; listening on {listen}; "
          f"CDRs to {'Redis and ' if config.redis else ''}the journal in {config.storage.dir})")
    return 0


def _not_built(what: str) -> int:
    print(f"mediacore: {what} is not built yet in this version ({__version__})", file=sys.stderr)
    return EXIT_NOT_BUILT


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help(sys.stderr)
        return 2
    if args.command == "serve":
        from mediacore.app import serve

        return serve(args.config)
    if args.command == "check-config":
        return check_config(args.file)
    if args.command == "cdr":
        return _not_built(f"`mediacore cdr {args.cdr_command}`")
    if args.command == "retention":
        return _not_built("`mediacore retention sweep`")
    parser.error(f"unknown command {args.command!r}")
    return 2
