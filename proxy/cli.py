"""`ringleader proxy` flags, from the settings table in proxy/config.py."""

from __future__ import annotations

import argparse
from typing import Any

from proxy import config as cfg


def add_arguments(parser: argparse.ArgumentParser) -> None:
    cfg.SETTINGS.add_arguments(parser)


def settings_from(args: argparse.Namespace) -> dict[str, Any]:
    return cfg.SETTINGS.from_args(args)


def run(args: argparse.Namespace) -> None:
    import uvloop

    from proxy.server import serve
    from ringleader import jsonlog

    config = cfg.build(settings_from(args))
    jsonlog.configure("proxy")
    uvloop.run(serve(config))
