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
from control.transport import HttpTransport, PeerAddress
from ringleader import jsonlog
from ringleader.address import Address, bind, parse_address
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


def parse_peers(text: str) -> dict[NodeId, str]:
    peers: dict[NodeId, str] = {}
    for item in text.split(","):
        ident, sep, url = item.strip().partition("=")
        if not sep or not ident.isdigit() or int(ident) <= 0:
            raise ConfigError(f"--peers: expected ID=URL with a positive ID, got {item!r}")
        if not url.startswith(("http://", "https://")):
            raise ConfigError(f"--peers: {ident}: expected an http:// URL, got {url!r}")
        try:
            PeerAddress.parse(url)
        except ValueError as exc:
            raise ConfigError(f"--peers: {ident}: {exc}") from None
        if int(ident) in peers:
            raise ConfigError(f"--peers: node {ident} is listed twice")
        peers[int(ident)] = url.rstrip("/")
    return peers


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--id", required=True, metavar="ID", help="this node's id (in --peers)")
    parser.add_argument("--listen", required=True, metavar="HOST:PORT")
    parser.add_argument("--peers", required=True, metavar="ID=URL,...",
                        help="every node of the cluster, this one included")  # fmt: skip
    parser.add_argument(
        "--data-dir", required=True, metavar="DIR",
        help="Raft log and snapshots; must exist (empty for a new node)",
    )  # fmt: skip
    parser.add_argument("--token-file", metavar="FILE",
                        help="cluster token (else $RINGLEADER_TOKEN)")  # fmt: skip
    defaults = DetectorSettings()
    detector = parser.add_argument_group("failure detector")
    detector.add_argument("--detector-quorum", type=float, default=defaults.quorum_fraction,
                          metavar="FRACTION",
                          help="more than this share of recently reporting proxies must agree "
                               "(default 0.5: a majority)")  # fmt: skip
    detector.add_argument("--report-ttl", type=float, default=defaults.report_ttl,
                          metavar="SECONDS",
                          help="a proxy's reports count for this long (default 6)")  # fmt: skip
    detector.add_argument("--hysteresis", type=float, default=defaults.hysteresis,
                          metavar="SECONDS",
                          help="seen up this long before it rejoins (default 5)")  # fmt: skip
    detector.add_argument("--max-eject-fraction", type=float,
                          default=defaults.max_eject_fraction, metavar="FRACTION",
                          help="most of a pool down at once (default 0.5)")  # fmt: skip
    detector.add_argument("--rejoin-policy", choices=["flush", "none"],
                          default=defaults.rejoin_policy,
                          help="flush a backend before it rejoins (default flush)")  # fmt: skip


def build_config(args: argparse.Namespace) -> ControlConfig:
    if not str(args.id).isdigit() or int(args.id) <= 0:
        raise ConfigError(f"--id: expected a positive whole number, got {args.id!r}")
    node_id = int(args.id)
    peers = parse_peers(args.peers)
    if node_id not in peers:
        raise ConfigError(f"--id {node_id} is not in --peers ({', '.join(map(str, peers))})")
    try:
        token = load_token(args.token_file)
    except TokenError as exc:
        raise ConfigError(str(exc)) from None
    if token is None:
        raise ConfigError("no cluster token: give --token-file FILE or set RINGLEADER_TOKEN")
    listen = parse_address("--listen", args.listen)
    for name in ("detector_quorum", "max_eject_fraction"):
        if not 0 <= getattr(args, name) < 1:
            raise ConfigError(f"--{name.replace('_', '-')}: expected a fraction in [0, 1)")
    for name in ("report_ttl", "hysteresis"):
        if getattr(args, name) < 0:
            raise ConfigError(f"--{name.replace('_', '-')}: must be >= 0")
    detector = DetectorSettings(
        quorum_fraction=args.detector_quorum, report_ttl=args.report_ttl,
        hysteresis=args.hysteresis, max_eject_fraction=args.max_eject_fraction,
        rejoin_policy=args.rejoin_policy,
    )  # fmt: skip
    return ControlConfig(node_id, listen, peers, args.data_dir, token, detector)


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
