"""A real `ringleader control` cluster for integration and fault tests.

`ControlCluster` starts N nodes on free loopback ports, each with its own data directory and
a shared token file, and can kill (SIGKILL), pause (SIGSTOP), continue and restart any node
by id. With `relays=True`, every node reaches every other node through a `RelayNetwork`: a
per-link TCP relay (node i's `--peers` URL for node j points at the relay of link i->j), so
a test can blackhole or refuse one direction of one link, or cut a node off entirely.

Everything runs on loopback, every process is started and ended by PID (through
`ProcessGroup`), and every wait polls with a deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import os
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from tests.support.servers import LOOPBACK, ProcessGroup, ServerProcess, free_port, wait_until

TOKEN = "test-cluster-token-" + "x" * 16
STATUS_TIMEOUT = 0.5


class LinkState(enum.Enum):
    PASS = "pass"
    """Bytes flow both ways."""
    BLACKHOLE = "blackhole"
    """Connections are accepted (or kept) but nothing is delivered either way: a silent
    partition, where the sender only learns of it by timing out."""
    REFUSE = "refuse"
    """Connections are reset as soon as they are accepted: a loud partition."""


# -- the fault-injecting relay -------------------------------------------------------------


@dataclass(eq=False)
class _Link:
    src: int
    dst: int
    target_port: int
    port: int
    state: LinkState = LinkState.PASS
    server: asyncio.Server | None = None
    writers: set[asyncio.StreamWriter] = field(default_factory=set)
    accepted: int = 0


class RelayNetwork:
    """Directed TCP relays between nodes, served by one asyncio loop in a daemon thread.

    Link (src, dst) carries everything node `src` sends to node `dst` (its requests and the
    replies to them). Changing a link's state aborts the connections it carries, so no
    HTTP exchange is left half-delivered when the link comes back.
    """

    def __init__(self) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="relays", daemon=True)
        self._thread.start()
        self._links: dict[tuple[int, int], _Link] = {}

    def _call(self, coro: Any, timeout: float = 10.0) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    def add_link(self, src: int, dst: int, target_port: int) -> int:
        """Starts the relay of link src->dst towards `target_port`; returns its port."""
        link = _Link(src, dst, target_port, free_port())
        self._call(self._serve(link))
        self._links[(src, dst)] = link
        return link.port

    async def _serve(self, link: _Link) -> None:
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            link.accepted += 1
            await self._relay(link, reader, writer)

        link.server = await asyncio.start_server(handle, LOOPBACK, link.port, reuse_address=True)

    async def _relay(
        self, link: _Link, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        if link.state is LinkState.REFUSE:
            _abort(writer)
            return
        link.writers.add(writer)
        upstream: asyncio.StreamWriter | None = None
        try:
            if link.state is LinkState.BLACKHOLE:
                while await reader.read(65536):
                    pass  # swallow until the peer gives up
                return
            try:
                up_reader, upstream = await asyncio.open_connection(LOOPBACK, link.target_port)
            except OSError:
                return
            link.writers.add(upstream)
            await asyncio.gather(pump(reader, upstream), pump(up_reader, writer))
        finally:
            for w in (writer, upstream):
                if w is not None:
                    link.writers.discard(w)
                    _abort(w)

    def set(self, src: int, dst: int, state: LinkState) -> None:
        link = self._links[(src, dst)]

        async def change() -> None:
            link.state = state
            for w in list(link.writers):
                _abort(w)
            link.writers.clear()

        self._call(change())

    def state(self, src: int, dst: int) -> LinkState:
        return self._links[(src, dst)].state

    def isolate(self, node: int, state: LinkState = LinkState.BLACKHOLE) -> None:
        """Cuts every link to and from `node`."""
        for src, dst in self._links:
            if node in (src, dst):
                self.set(src, dst, state)

    def heal(self) -> None:
        for src, dst in self._links:
            if self._links[(src, dst)].state is not LinkState.PASS:
                self.set(src, dst, LinkState.PASS)

    def close(self) -> None:
        async def shutdown() -> None:
            for link in self._links.values():
                if link.server is not None:
                    link.server.close()
                for w in list(link.writers):
                    _abort(w)

        with contextlib.suppress(Exception):
            self._call(shutdown())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)


async def pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Copies `reader` into `writer` until EOF, then drops the connection."""
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (OSError, asyncio.IncompleteReadError):
        pass
    finally:
        _abort(writer)


def _abort(writer: asyncio.StreamWriter) -> None:
    transport = writer.transport
    if not transport.is_closing():
        transport.abort()


# -- the cluster -----------------------------------------------------------------------------


@dataclass
class ControlNode:
    id: int
    port: int
    data_dir: Path
    peers_arg: str
    process: ServerProcess | None = None

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    def alive(self) -> bool:
        return self.process is not None and self.process.alive()


class ControlCluster:
    """N `ringleader control` nodes with ids 1..N. Use `start()`, then address nodes by id."""

    def __init__(
        self, procs: ProcessGroup, workdir: Path, size: int = 3, *, relays: bool = False,
        token: str = TOKEN, extra_env: dict[str, str] | None = None,
    ) -> None:  # fmt: skip
        self.procs = procs
        self.workdir = workdir
        self.token = token
        workdir.mkdir(parents=True, exist_ok=True)
        self.token_file = workdir / "cluster.token"
        self.token_file.write_text(token + "\n")
        self.extra_env = extra_env or {}
        self.relays = RelayNetwork() if relays else None
        ports = {i: free_port() for i in range(1, size + 1)}
        self.nodes: dict[int, ControlNode] = {}
        for i, port in ports.items():
            peers = {}
            for j, other in ports.items():
                if i == j or self.relays is None:
                    peers[j] = f"http://{LOOPBACK}:{other}"
                else:
                    peers[j] = f"http://{LOOPBACK}:{self.relays.add_link(i, j, other)}"
            data_dir = workdir / f"node-{i}"
            data_dir.mkdir(parents=True, exist_ok=True)
            peers_arg = ",".join(f"{j}={u}" for j, u in sorted(peers.items()))
            self.nodes[i] = ControlNode(i, port, data_dir, peers_arg)
        self.http = httpx.Client(timeout=STATUS_TIMEOUT)

    # -- lifecycle ---------------------------------------------------------------------------

    def argv(self, node_id: int) -> list[str]:
        node = self.nodes[node_id]
        return ["control", "--id", str(node_id), "--listen", f"{LOOPBACK}:{node.port}",
                "--peers", node.peers_arg, "--data-dir", str(node.data_dir),
                "--token-file", str(self.token_file)]  # fmt: skip

    def start_node(self, node_id: int) -> ControlNode:
        node = self.nodes[node_id]
        if node.alive():
            raise RuntimeError(f"node {node_id} is already running")
        node.process = self._spawn(node_id)
        node.process.wait_port()
        return node

    def _spawn(self, node_id: int) -> ServerProcess:
        env = {**os.environ, **self.extra_env} if self.extra_env else None
        port = self.nodes[node_id].port
        return self.procs.ringleader(self.argv(node_id), port, name=f"control-{node_id}", env=env)

    def start(self, timeout: float = 20.0) -> ControlCluster:
        for node_id in self.nodes:
            self.nodes[node_id].process = self._spawn(node_id)
        for node in self.nodes.values():
            assert node.process is not None
            node.process.wait_port()
        self.wait_leader(timeout)
        return self

    def kill(self, node_id: int) -> None:
        """SIGKILL (continuing it first if it is paused, or it cannot die)."""
        proc = self.nodes[node_id].process
        assert proc is not None
        if proc.alive():
            proc.cont()
            proc.kill()

    def stop(self, node_id: int) -> None:
        proc = self.nodes[node_id].process
        assert proc is not None
        proc.stop()

    def cont(self, node_id: int) -> None:
        proc = self.nodes[node_id].process
        assert proc is not None
        proc.cont()

    def restart(self, node_id: int) -> ControlNode:
        self.kill(node_id)
        return self.start_node(node_id)

    def close(self) -> None:
        self.http.close()
        if self.relays is not None:
            self.relays.close()

    # -- observation -------------------------------------------------------------------------

    def url(self, node_id: int) -> str:
        return self.nodes[node_id].url

    @property
    def urls(self) -> list[str]:
        return [n.url for n in self.nodes.values()]

    @property
    def control_arg(self) -> str:
        return ",".join(self.urls)

    def status(self, node_id: int, timeout: float = STATUS_TIMEOUT) -> dict[str, Any] | None:
        """The node's /v1/status, or None if it does not answer in time."""
        try:
            r = self.http.get(self.url(node_id) + "/v1/status", timeout=timeout)
        except httpx.HTTPError:
            return None
        return r.json() if r.status_code == 200 else None

    def statuses(self, ids: list[int] | None = None) -> dict[int, dict[str, Any]]:
        out = {}
        for i in ids if ids is not None else list(self.nodes):
            if not self.nodes[i].alive():
                continue
            s = self.status(i)
            if s is not None:
                out[i] = s
        return out

    def current_leader(self, among: list[int] | None = None) -> int | None:
        """A leader confirmed by a majority of the whole cluster (itself included) at its
        term, among the live, answering nodes in `among` (default: all)."""
        statuses = self.statuses(among)
        majority = len(self.nodes) // 2 + 1
        for i, s in statuses.items():
            if s["role"] != "leader":
                continue
            agree = [j for j, t in statuses.items() if t["leader"] == i and t["term"] == s["term"]]
            if len(agree) >= majority:
                return i
        return None

    def wait_leader(
        self, timeout: float = 15.0, among: list[int] | None = None, other_than: int | None = None
    ) -> int:
        found: list[int] = []

        def ready() -> bool:
            leader = self.current_leader(among)
            if leader is None or leader == other_than:
                return False
            found.append(leader)
            return True

        wait_until(ready, timeout, "a leader acknowledged by a majority")
        return found[-1]

    def followers(self, leader: int) -> list[int]:
        return [i for i in self.nodes if i != leader]

    def wait_applied(self, index: int, ids: list[int], timeout: float = 15.0) -> None:
        def caught_up() -> bool:
            statuses = self.statuses(ids)
            return len(statuses) == len(ids) and all(
                s["applied_index"] >= index for s in statuses.values()
            )

        wait_until(caught_up, timeout, f"nodes {ids} to apply index {index}")

    def metric(self, node_id: int, name: str, labels: dict[str, str] | None = None) -> float:
        """One sample of /metrics (0.0 if the series is absent)."""
        text = self.http.get(self.url(node_id) + "/metrics", timeout=2).text
        return parse_metric(text, name, labels)

    # -- API helpers -------------------------------------------------------------------------

    def headers(self, request_id: str | None = None, token: str | None = None) -> dict[str, str]:
        return {
            "authorization": f"Bearer {self.token if token is None else token}",
            "x-request-id": request_id or uuid.uuid4().hex,
        }

    def write(
        self, node_id: int, method: str, path: str, body: Any = None,
        request_id: str | None = None, timeout: float = 8.0,
    ) -> httpx.Response:  # fmt: skip
        return self.http.request(
            method, self.url(node_id) + path, json=body, headers=self.headers(request_id),
            timeout=timeout,
        )  # fmt: skip

    def write_acked(
        self, method: str, path: str, body: Any = None, deadline: float = 20.0,
        prefer: list[int] | None = None,
    ) -> dict[str, Any]:  # fmt: skip
        """Retries one command (one request id) across live nodes until a node acknowledges
        it; returns the JSON result. A 4xx answer is a definitive refusal and raises."""
        request_id = uuid.uuid4().hex
        give_up = time.monotonic() + deadline
        order = prefer or [i for i in self.nodes if self.nodes[i].alive()]
        attempt = 0
        while True:
            node_id = order[attempt % len(order)]
            attempt += 1
            try:
                r = self.write(node_id, method, path, body, request_id, timeout=6.0)
            except httpx.HTTPError:
                pass
            else:
                if r.status_code == 200:
                    return dict(r.json())
                if 400 <= r.status_code < 500:
                    raise AssertionError(f"{method} {path} refused: {r.status_code} {r.text}")
            if time.monotonic() > give_up:
                raise TimeoutError(f"{method} {path} not acknowledged within {deadline}s")
            time.sleep(0.05)

    def backend_names(
        self, node_id: int, *, stale: bool = False, pool: str = "default", timeout: float = 8.0
    ) -> list[str]:
        """Backend names (not removed) of a pool read from `node_id`; raises on non-200."""
        params = {"stale": "1"} if stale else None
        r = self.http.get(
            f"{self.url(node_id)}/v1/pools/{pool}/backends", params=params, timeout=timeout
        )
        if r.status_code != 200:
            raise ReadFailed(r.status_code, r.text)
        return [b["name"] for b in r.json()["backends"] if b["admin"] != "removed"]


class ReadFailed(Exception):
    def __init__(self, status: int, text: str) -> None:
        super().__init__(f"{status}: {text[:200]}")
        self.status = status


def parse_metric(text: str, name: str, labels: dict[str, str] | None = None) -> float:
    want = labels or {}
    total = 0.0
    for line in text.splitlines():
        if line.startswith("#") or not line.startswith(name):
            continue
        series, _, value = line.rpartition(" ")
        metric, _, rest = series.partition("{")
        if metric != name:
            continue
        found = dict(part.split("=", 1) for part in rest.rstrip("}").split(",") if "=" in part)
        found = {k: v.strip('"') for k, v in found.items()}
        if all(found.get(k) == v for k, v in want.items()):
            total += float(value)
    return total


def backend_url(name: str, port: int = 11211, weight: int | None = None) -> str:
    """A memcached backend URL (nothing needs to listen there: the registry stores it)."""
    query = f"?name={name}" + (f"&weight={weight}" if weight is not None else "")
    return f"memcached://{LOOPBACK}:{port}{query}"


@contextlib.contextmanager
def control_cluster(
    procs: ProcessGroup, size: int = 3, *, relays: bool = False, start: bool = True
) -> Iterator[ControlCluster]:
    cluster = ControlCluster(procs, procs.workdir / "cluster", size, relays=relays)
    try:
        if start:
            cluster.start()
        yield cluster
    finally:
        cluster.close()


def module_cluster(
    tmp_path_factory: Any, name: str = "cluster", size: int = 3, relays: bool = False
) -> Iterator[ControlCluster]:
    """The body of a module-scoped fixture: one cluster shared by a module's tests.

    `tmp_path_factory` is pytest's; the tests must leave every node running."""
    workdir = tmp_path_factory.mktemp(name)
    group = ProcessGroup(workdir)
    cluster = ControlCluster(group, workdir / "cluster", size, relays=relays)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.close()
        group.cleanup()
