"""`ringleader import-twemproxy --control`: the pool and its servers, registered through
the same calls as `ringleader pool create` and `ringleader backend add`."""

from __future__ import annotations

import argparse
import sys

from control import ops
from ringleader.control_client import ControlClient
from ringleader.twemproxy import Conversion


def register(args: argparse.Namespace, conversion: Conversion) -> None:
    """Creates the pool (with the config's hash) and adds each server in twemproxy's order,
    which is the ring order. Both calls are idempotent, so rerunning the import is safe."""

    async def command(client: ControlClient, _: argparse.Namespace) -> None:
        who = args.who
        create = argparse.Namespace(
            name=conversion.pool, hash=conversion.settings["hash"], json=False, who=who
        )
        print(await ops.pool_create(client, create), file=sys.stderr)
        for backend in conversion.backends:
            add = argparse.Namespace(
                action="add", target=backend.url, pool=conversion.pool, json=False, who=who,
                why="ringleader import-twemproxy", wait=False,
            )  # fmt: skip
            print(await ops.backend_change(client, add), file=sys.stderr)

    runner = ops.runner(command)
    runner(argparse.Namespace(**{**vars(args), "json": False}))
