"""The ``mediacore`` command: the operator's face of the server.

Subcommands follow the contract in docs/contracts.md (``serve``,
``check-config``, ``cdr list``, ``cdr export``, ``retention sweep``); each
says what went wrong on stderr and exits non-zero, so that a script calling
it never mistakes silence for success.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path

from mediacore import __version__
from mediacore.config import Config, ConfigError, example_config_path, load_config

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
  mediacore cdr list --format csv      CDRs from the local journals (every node's)
  mediacore cdr list --node core1      CDRs of one node (one process) only
  mediacore cdr list --owner acme --since 2026-11-01 --until 2026-12-01 --format json
  mediacore cdr export --owner acme --out ./acme-export
  mediacore retention sweep            delete recordings whose retention ended
  mediacore retention sweep --all-nodes  ... of every node below the storage dir
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
    serve.add_argument(
        "--log-level", choices=("debug", "info", "warning", "error"), default=None,
        help="overrides [log] level. info (the default): a line when a call comes in and "
             "one when it ends (how, never who called), plus every failover, rejection and "
             "error; debug: every step of every call and its whole CDR, for tracing a "
             "problem (costs CPU under load; shown caller numbers appear, withheld never)",
    )

    check = commands.add_parser(
        "check-config",
        help="validate a config file and exit",
        description="Load and validate FILE; print every error with the key it concerns.",
    )
    check.add_argument("file", metavar="FILE")

    cdr = commands.add_parser("cdr", help="read call detail records from the local journal")
    cdr_commands = cdr.add_subparsers(dest="cdr_command", metavar="ACTION", required=True)
    cdr_list = cdr_commands.add_parser(
        "list", help="list CDRs",
        description="Print CDRs from the local journal, oldest first, as CSV (with a header "
        "of the contract's field names) or as a JSON array. Times are ISO 8601: a date "
        "(2026-11-23, midnight UTC) or a date-time (UTC unless it names a zone). --since is "
        "inclusive, --until exclusive; both compare with the call's start.",
    )
    cdr_list.add_argument("--number", metavar="N", help="only calls to this service number")
    cdr_list.add_argument("--owner", metavar="O", help="only this owner's calls")
    cdr_list.add_argument("--since", metavar="T", type=_when, help="calls that started at/after T")
    cdr_list.add_argument("--until", metavar="T", type=_when, help="calls that started before T")
    cdr_list.add_argument("--format", choices=("csv", "json"), default="csv")
    cdr_list.add_argument("--node", metavar="NAME", help=NODE_HELP)
    cdr_list.add_argument("-c", "--config", metavar="FILE", help=CONFIG_HELP)
    cdr_export = cdr_commands.add_parser(
        "export", help="write an owner's call history (CSV, JSON) and recordings (WAV)",
        description="Write the owner's CDRs (cdrs.csv, cdrs.json), their recordings' handles "
        "(recordings.csv, recordings.json) and copies of the WAV files still kept "
        "(recordings/ID.wav) into DIR, which must not exist or be empty. Recordings no "
        "longer kept are listed with the reason.",
    )
    cdr_export.add_argument("--owner", required=True, metavar="O")
    cdr_export.add_argument("--out", required=True, metavar="DIR")
    cdr_export.add_argument("--node", metavar="NAME", help=NODE_HELP)
    cdr_export.add_argument("-c", "--config", metavar="FILE", help=CONFIG_HELP)

    retention = commands.add_parser("retention", help="recording retention")
    retention_commands = retention.add_subparsers(
        dest="retention_command", metavar="ACTION", required=True
    )
    sweep = retention_commands.add_parser(
        "sweep", help="delete expired recordings now",
        description="Delete every recording whose retention has ended: the file, its Redis "
        "hash and expiry entry, with a 'deleted' event. Sweeps the recordings of the "
        "configured [records] node (each server sweeps its own node's too), or of --node "
        "NAME, or of every node with a journal below the storage dir (--all-nodes: for "
        "nodes no longer running). Safe beside running servers. Exit status 1 if a file "
        "could not be deleted or Redis could not be updated.",
    )
    which = sweep.add_mutually_exclusive_group()
    which.add_argument("--node", metavar="NAME",
                       help="sweep this node's recordings instead of the configured node's")
    which.add_argument("--all-nodes", action="store_true",
                       help="sweep every node's recordings below the storage dir")
    sweep.add_argument("-c", "--config", metavar="FILE", help=CONFIG_HELP)
    return parser


CONFIG_HELP = "TOML config file (default: the bundled example, storage under the working dir)"
NODE_HELP = ("only this [records] node's journal (default: every node's journal below the "
             "storage dir, merged in time order)")


def _when(text: str) -> datetime:
    from mediacore.records.history import parse_when

    try:
        return parse_when(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _load(path: str | None) -> Config | None:
    """The config as ``serve`` would load it; errors go to stderr (None)."""
    try:
        if path is None:
            return load_config(example_config_path(), base_dir=Path.cwd())
        return load_config(path)
    except ConfigError as error:
        print(error, file=sys.stderr)
        return None


def _cli_logging() -> None:
    """Warnings (a torn journal line, a file that would not go) on stderr, not on stdout."""
    logging.basicConfig(level=logging.WARNING, format="mediacore: %(message)s",
                        stream=sys.stderr)


def _journals(config: Config, node: str | None) -> list[Path] | None:
    """The journals ``cdr list``/``export`` read: every node's, or ``node``'s (None: error)."""
    from mediacore.records.layout import journal_dirs, journal_root, node_problem

    if node is not None and node_problem(node):
        print(f"mediacore: --node {node!r} {node_problem(node)}", file=sys.stderr)
        return None
    found = journal_dirs(config.storage.dir, node)
    if not found:
        where = journal_root(config.storage.dir) / (node or "")
        print(f"mediacore: no journal in {where} yet", file=sys.stderr)
    return [directory for _, directory in found]


def cdr_list(args: argparse.Namespace) -> int:
    from mediacore.records.history import iter_cdrs, select_cdrs, write_cdrs

    config = _load(args.config)
    if config is None:
        return 1
    _cli_logging()
    directories = _journals(config, args.node)
    if directories is None:
        return 2
    cdrs = select_cdrs(iter_cdrs(directories), number=args.number, owner=args.owner,
                       since=args.since, until=args.until)
    try:
        write_cdrs(cdrs, sys.stdout, args.format)
        sys.stdout.flush()
    except BrokenPipeError:
        # `mediacore cdr list | head`: the reader has what it wanted.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 0


def cdr_export(args: argparse.Namespace) -> int:
    from mediacore.records.history import export_owner

    config = _load(args.config)
    if config is None:
        return 1
    _cli_logging()
    directories = _journals(config, args.node)
    if directories is None:
        return 2
    try:
        report = export_owner(directories, args.owner, Path(args.out))
    except OSError as error:
        print(f"mediacore: cannot export to {args.out}: {error}", file=sys.stderr)
        return 1
    print(f"{args.out}: {report.cdrs} CDRs, {report.recordings} recordings "
          f"({len(report.copied)} WAV files copied) for owner {args.owner}")
    for id, why in report.not_copied.items():
        print(f"  recording {id} not included: {why}")
    return 0


def retention_sweep(args: argparse.Namespace) -> int:
    import asyncio

    from mediacore.records.layout import flat_journal_present, node_problem
    from mediacore.records.service import sweep_nodes, sweep_once

    config = _load(args.config)
    if config is None:
        return 1
    _cli_logging()
    if args.node is not None and node_problem(args.node):
        print(f"mediacore: --node {args.node!r} {node_problem(args.node)}", file=sys.stderr)
        return 2
    if flat_journal_present(config.storage.dir):
        print(f"mediacore: {config.storage.dir}/journal holds a journal from before per-node "
              "journals; start the server once to move it into its node's dir (its "
              "recordings are not swept until then)", file=sys.stderr)
    nodes = (sweep_nodes(config) if args.all_nodes
             else [args.node or config.records.node])
    result = asyncio.run(sweep_once(config, nodes=nodes))
    report = result.report
    missing = sum(1 for d in report.deleted if d.file == "missing")
    print(f"retention: {len(report.deleted)} recordings deleted ({missing} files were already "
          f"gone), {len(report.failed)} could not be deleted (node{'s' if len(nodes) != 1 else ''}"
          f" {', '.join(nodes) or 'none'})")
    for due, why in report.failed:
        print(f"  recording {due.id} (call {due.call_id}): {due.path}: {why}", file=sys.stderr)
    if result.publish_error:
        print(f"mediacore: Redis not updated ({result.publish_error}); the deletions are in "
              "the journal and are published by the server", file=sys.stderr)
    return 0 if result.ok else 1


def check_config(path: str) -> int:
    """Validate a config the way ``serve`` would, before any socket opens."""
    try:
        config = load_config(path)
    except ConfigError as error:
        print(error, file=sys.stderr)
        return 1
    from mediacore import checks

    found = checks.problems(config)
    if found:
        for problem in found:
            print(f"{path}: {problem}", file=sys.stderr)
        return 1
    listen = ", ".join(str(address) for address in config.sip.listen)
    print(f"{path}: ok ({len(config.numbers)} numbers; listening on {listen}; "
          f"CDRs to {'Redis and ' if config.redis else ''}the journal in {config.storage.dir})")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help(sys.stderr)
        return 2
    if args.command == "serve":
        from mediacore.app import serve

        return serve(args.config, log_level=args.log_level)
    if args.command == "check-config":
        return check_config(args.file)
    if args.command == "cdr":
        return cdr_list(args) if args.cdr_command == "list" else cdr_export(args)
    if args.command == "retention":
        return retention_sweep(args)
    parser.error(f"unknown command {args.command!r}")
    return 2
