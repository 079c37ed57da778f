"""The `ringleader` command: one entry point, one subcommand per process or operator task."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import NoReturn

from control import ops, service
from control import twemproxy as control_twemproxy
from control.raft.errors import StorageError
from proxy import cli as proxy_cli
from ringleader import twemproxy, up
from ringleader.settings import ConfigError


class OneLineParser(argparse.ArgumentParser):
    """Usage errors as one line naming the command and the problem (`--help` has the rest)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="ringleader",
        description="Caching reverse proxy for memcached and redis fleets.",
    )
    sub = parser.add_subparsers(
        dest="command", metavar="COMMAND", required=True, parser_class=OneLineParser
    )
    proxy = sub.add_parser("proxy", help="run a proxy (data plane)")
    proxy_cli.add_arguments(proxy)
    proxy.set_defaults(func=proxy_cli.run)
    node = sub.add_parser("control", help="run a control-plane node")
    service.add_arguments(node)
    node.set_defaults(func=service.run)
    ops.add_commands(sub)
    imported = sub.add_parser(
        "import-twemproxy", help="a proxy config (and with --control, backends) from nutcracker.yml"
    )
    twemproxy.add_arguments(imported)
    imported.set_defaults(func=lambda args: twemproxy.run(args, control_twemproxy.register))
    stack = sub.add_parser("up", help="run the whole system on this machine (Ctrl-C stops it)")
    up.add_arguments(stack)
    stack.set_defaults(func=up.run)
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        args.func(args)
    except ConfigError as exc:
        parser.exit(2, f"ringleader {args.command}: error: {exc}\n")
    except StorageError as exc:
        parser.exit(1, f"ringleader {args.command}: error: {exc}\n")
    except OSError as exc:
        # Bind failures and unreadable files: the message already names the problem.
        parser.exit(1, f"ringleader {args.command}: error: {exc}\n")
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()
