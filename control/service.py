"""`ringleader control`: one control-plane node."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
from dataclasses import dataclass

import uvicorn
import uvloop

from control.aio_sync import AioSync
from control.api import ControlAPI
from control.detector import DetectorLoop, DetectorSettings, FailureDetector
from control.metrics import ControlMetrics
from control.node import RaftNode
from control.raft.config import RaftConfig
from control.raft.diskstore import DiskStorage
from control.raft.errors import StorageError
from control.raft.types import NodeId
from control.registry import Registry
from control.settings import SETTINGS
from control.transport import HttpTransport
from ringleader import jsonlog
from ringleader.address import Address, bind
from ringleader.embedded import EmbeddedServer
from ringleader.settings import ConfigError
from ringleader.token import TokenError, load_token

log = logging.getLogger("ringleader.control")


@dataclass(frozen=True, slots=True)
class ControlConfig:
    node_id: NodeId
    listen: Address
    peers: dict[NodeId, str]
    data_dir: str
    token: str
    detector: DetectorSettings


def add_arguments(parser: argparse.ArgumentParser) -> None:
    SETTINGS.add_arguments(parser)


def build_config(args: argparse.Namespace) -> ControlConfig:
    values = SETTINGS.parse(SETTINGS.from_args(args))
    node_id: NodeId = values["id"]
    peers: dict[NodeId, str] = values["peers"]
    if node_id not in peers:
        raise ConfigError(f"--id {node_id} is not in --peers ({', '.join(map(str, peers))})")
    try:
        token = load_token(values["token_file"])
    except TokenError as exc:
        raise ConfigError(str(exc)) from None
    if token is None:
        raise ConfigError("no cluster token: give --token-file FILE or set RINGLEADER_TOKEN")
    detector = DetectorSettings(
        quorum_fraction=values["detector_quorum"], report_ttl=values["report_ttl"],
        hysteresis=values["hysteresis"], max_eject_fraction=values["max_eject_fraction"],
        rejoin_policy=values["rejoin_policy"],
    )  # fmt: skip
    return ControlConfig(node_id, values["listen"], peers, values["data_dir"], token, detector)


def run(args: argparse.Namespace) -> None:
    config = build_config(args)
    jsonlog.configure(f"control-{config.node_id}")
    storage = DiskStorage(config.data_dir)
    try:
        uvloop.run(serve(config, storage))
    finally:
        storage.close()


def open_aio_sync(data_dir: str) -> AioSync | None:
    """Kernel AIO for the log's flushes, or None (flushes then run on the disk thread)."""
    try:
        sync = AioSync.open(data_dir)
    except OSError as exc:
        log.warning("log flushes run on a thread: kernel AIO unavailable: %s", exc,
                    extra={"ctx": {"data_dir": data_dir}})  # fmt: skip
        return None
    log.info("log flushes run through kernel AIO")
    return sync


async def serve(config: ControlConfig, storage: DiskStorage) -> None:
    # Handlers first: a SIGTERM during start-up must still mean a clean stop.
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    sock = bind(config.listen, "--listen")
    metrics = ControlMetrics()
    others = {i: u for i, u in config.peers.items() if i != config.node_id}
    transport = HttpTransport(others, config.token, metrics)
    fdatasync = open_aio_sync(config.data_dir)
    registry = Registry()
    node = RaftNode(
        RaftConfig(node_id=config.node_id, peers=tuple(sorted(config.peers))),
        storage, registry, transport.send, metrics, fdatasync=fdatasync,
    )  # fmt: skip
    detector = DetectorLoop(node, registry, FailureDetector(config.detector), metrics)
    api = ControlAPI(node, registry, config.peers, config.token, metrics, detector)
    server = EmbeddedServer(
        uvicorn.Config(
            api.app(),
            lifespan="off",
            access_log=False,
            log_config=None,
            timeout_graceful_shutdown=2,
            # Peers and operators connect directly: no X-Forwarded-* to honour, and no
            # reason to name the server software.
            proxy_headers=False,
            server_header=False,
        )
    )

    async def stop_on_signal_or_failure() -> None:
        signalled = asyncio.ensure_future(stop.wait())
        failed = asyncio.ensure_future(node.failed.wait())
        await asyncio.wait({signalled, failed}, return_when=asyncio.FIRST_COMPLETED)
        signalled.cancel()
        failed.cancel()
        api.end_peer_streams()
        server.should_exit = True

    stopper = asyncio.create_task(stop_on_signal_or_failure())
    transport.start()
    node.start()
    detector_task = asyncio.create_task(detector.run(), name="detector")
    log.info(
        "control node listening",
        extra={"ctx": {"id": config.node_id, "listen": str(config.listen),
                       "peers": config.peers, "data_dir": config.data_dir,
                       "applied_index": registry.applied_index}},
    )  # fmt: skip
    try:
        await server.serve(sockets=[sock])
    finally:
        stopper.cancel()
        detector_task.cancel()
        await node.stop()
        if fdatasync is not None:
            fdatasync.close()
        await transport.close()
        await api.close()
    if node.failure is not None:
        raise StorageError(node.failure)
