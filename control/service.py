"""`ringleader control`: one control-plane node."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import functools
import gc
import logging
import signal
from dataclasses import dataclass

import uvicorn
import uvloop

from control.aio_sync import AioSync
from control.api import ControlAPI
from control.detector import DetectorLoop, DetectorSettings, FailureDetector
from control.joining import check_bootstrap, check_join
from control.metrics import ControlMetrics
from control.node import RaftNode
from control.raft.config import RaftConfig
from control.raft.diskstore import DiskStorage
from control.raft.errors import CorruptRecordError, StorageError
from control.raft.membership import Membership
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

# Long past the departure grace of the core (election_ticks_min ticks after the commit).
REMOVED_PEER_SECONDS = 5.0
# Python's defaults but for the oldest generation: a full collection once per 100 of the
# middle one's instead of 10 (see keep_gc_pauses_short).
GC_THRESHOLDS = (700, 10, 100)


@dataclass(frozen=True, slots=True)
class ControlConfig:
    node_id: NodeId
    listen: Address
    peers: dict[NodeId, str]
    data_dir: str
    token: str
    detector: DetectorSettings
    disk_stall_timeout: float
    join: tuple[str, ...] = ()
    """`--join` URLs; then `peers` holds the members the cluster named (control.joining)."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    SETTINGS.add_arguments(parser)


def build_config(args: argparse.Namespace) -> ControlConfig:
    values = SETTINGS.parse(SETTINGS.from_args(args))
    node_id: NodeId = values["id"]
    peers: dict[NodeId, str] = values["peers"] or {}
    join: list[str] = values["join"] or []
    if bool(peers) == bool(join):
        raise ConfigError("give either --peers (a new cluster) or --join (a running one)")
    if peers and node_id not in peers:
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
    return ControlConfig(
        node_id, values["listen"], peers, values["data_dir"], token, detector,
        values["disk_stall_timeout"], tuple(join),
    )  # fmt: skip


def run(args: argparse.Namespace) -> None:
    config = build_config(args)
    jsonlog.configure(f"control-{config.node_id}")
    try:
        storage = DiskStorage(config.data_dir)
    except CorruptRecordError as exc:
        # Not repairable in place: the node may have lost entries it acknowledged.
        raise StorageError(
            f"{exc}; replace this node or restore its data directory "
            '(docs/runbook.md, "A control node\'s data is damaged")'
        ) from None
    try:
        if config.join:
            members = check_join(config.node_id, list(config.join), storage)
            config = dataclasses.replace(config, peers=members)
        else:
            check_bootstrap(config.node_id, config.peers, storage)
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


def follow_membership(
    config: ControlConfig, transport: HttpTransport, metrics: ControlMetrics, m: Membership
) -> None:
    """Keeps the transport, and the peers the API forwards to (`config.peers`, shared with
    it), in step with the configuration in use. A joining node's has no members until the
    leader's log brings them: it keeps those the cluster named."""
    if not m.members:
        return
    others = {i: u for i, u in m.members.items() if i != config.node_id}
    transport.update_peers(others, ())
    # Not at once: the leader keeps sending a removed node heartbeats until it has heard
    # that its removal committed, and then it stops for good.
    asyncio.get_running_loop().call_later(
        REMOVED_PEER_SECONDS, transport.update_peers, {}, tuple(m.removed)
    )
    config.peers.update(m.members)
    for gone in m.removed:
        config.peers.pop(gone, None)
    metrics.members.labels("voter").set(len(m.voters))
    metrics.members.labels("learner").set(len(m.learners))


def keep_gc_pauses_short() -> None:
    """Takes what start-up built (modules, the app, the restored registry) out of every
    later garbage collection, and makes full collections rare.

    A full collection stops the event loop while it walks every tracked object. At 1,000
    proxies a node tracks 70-160 thousand, a walk took 40-90 ms of CPU (120-320 ms on a
    shared machine), and one came every few seconds: a ring change re-polls every watch, and
    the new watches, living long, fill the oldest generation. A leader stopped that long
    sends no heartbeats for longer than the followers' election timeout (200-400 ms); in
    bench.control_scale most elections followed one. The rest of the objects die young
    and the younger generations, small, are collected as often as before.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


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
        RaftConfig(node_id=config.node_id, peers=() if config.join else tuple(sorted(config.peers)),
                   peer_urls=tuple(sorted(config.peers.items()))),
        storage, registry, transport.send, metrics, fdatasync=fdatasync,
        disk_stall_timeout=config.disk_stall_timeout,
    )  # fmt: skip
    node.watch_membership(functools.partial(follow_membership, config, transport, metrics))
    node.reachable = transport.streaming
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
        if stop.is_set():
            # A leader that just stopped would leave the cluster leaderless for an election
            # timeout.
            await node.hand_over_leadership()
        api.end_peer_streams()
        server.should_exit = True

    stopper = asyncio.create_task(stop_on_signal_or_failure())
    keep_gc_pauses_short()
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
