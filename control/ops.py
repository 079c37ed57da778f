"""Operator commands: `ringleader backend|pool|ring|status|events|rollback|member`.

Each talks to the control plane through any of the `--control` URLs, prints a readable
table, or JSON with `--json`, and exits non-zero with a one-line message on failure.

Ring changes take `--wait`: after the write commits, the command polls the proxies view
until every proxy that reported within the detector's window routes on the new epoch.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import math
import os
import sys
import uuid
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TextIO
from urllib.parse import quote

from ringleader.control_client import ControlClient, ControlError, split_urls
from ringleader.ring import KetamaRing
from ringleader.token import TokenError, load_token
from ringleader.wire import ProxiesDocument, ReportingProxy, RingDocument, WireError

CONTROL_ENV = "RINGLEADER_CONTROL"
DEFAULT_CONTROL = "http://127.0.0.1:7000"
WAIT_TIMEOUT = 10.0
WAIT_POLL_SECONDS = 0.1

Command = Callable[[ControlClient, argparse.Namespace], Awaitable[Any]]


def _common(parser: argparse.ArgumentParser, pool: bool = True) -> None:
    parser.add_argument(
        "--control",
        action="append",
        metavar="URL[,URL...]",
        help=f"control nodes (default ${CONTROL_ENV} or {DEFAULT_CONTROL})",
    )
    parser.add_argument(
        "--token-file", metavar="FILE", help="cluster token (else $RINGLEADER_TOKEN)"
    )
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument("--who", default=None, help="recorded as the author (default $USER)")
    if pool:
        parser.add_argument("--pool", default="default", metavar="NAME")


def _waiting(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--wait", action="store_true",
        help="return once every proxy that reported recently routes on the new epoch",
    )  # fmt: skip
    parser.add_argument(
        "--wait-timeout", type=_seconds, default=WAIT_TIMEOUT, metavar="SECONDS",
        help="with --wait: fail, naming the proxies behind, after this long (default %(default)g)",
    )  # fmt: skip


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"expected a number of seconds > 0, got {text!r}")
    return value


def add_commands(sub: Any) -> None:
    backend = sub.add_parser("backend", help="add, remove, drain or list backends")
    actions = backend.add_subparsers(dest="action", metavar="ACTION", required=True)
    for name, helptext in (("add", "add a backend by URL"), ("remove", "remove a backend"),
                           ("drain", "take a backend out of the ring without marking it failed"),
                           ("activate", "put a drained backend back in the ring")):  # fmt: skip
        p = actions.add_parser(name, help=helptext)
        p.add_argument("target", metavar="URL" if name == "add" else "NAME")
        p.add_argument("--why", default="", help="reason, recorded in the event history")
        _common(p)
        _waiting(p)
        p.set_defaults(func=runner(backend_change))
    listing = actions.add_parser("list", help="list the pool's backends")
    _common(listing)
    listing.set_defaults(func=runner(_backend_list))

    pool = sub.add_parser("pool", help="create or list pools")
    pool_actions = pool.add_subparsers(dest="action", metavar="ACTION", required=True)
    create = pool_actions.add_parser("create", help="create a pool")
    create.add_argument("name")
    create.add_argument("--hash", default="fnv1a_64", choices=["fnv1a_64", "md5"])
    _common(create, pool=False)
    create.set_defaults(func=runner(pool_create))
    pools = pool_actions.add_parser("list", help="list pools and their rings")
    _common(pools, pool=False)
    pools.set_defaults(func=runner(_pool_list))

    ring = sub.add_parser("ring", help="show the ring, or where a key routes and why")
    ring.add_argument("--key", help="a key to locate")
    _common(ring)
    ring.set_defaults(func=runner(_ring))

    status = sub.add_parser("status", help="role, term, leader, commit and applied of every node")
    _common(status, pool=False)
    status.set_defaults(func=runner(_status))

    events = sub.add_parser("events", help="ring changes: time, epoch, cause and evidence")
    events.add_argument("--limit", type=int, default=50)
    _common(events)
    events.set_defaults(func=runner(_events))

    rollback = sub.add_parser("rollback", help="restore the membership of an earlier epoch")
    rollback.add_argument("epoch", type=int)
    rollback.add_argument("--why", default="", help="reason, recorded in the event history")
    _common(rollback)
    _waiting(rollback)
    rollback.set_defaults(func=runner(_rollback))

    member = sub.add_parser("member", help="list, add or remove control nodes")
    member_actions = member.add_subparsers(dest="action", metavar="ACTION", required=True)
    add = member_actions.add_parser(
        "add", help="add a node as a learner; the leader promotes it to voter once caught up"
    )
    add.add_argument("member", type=_member_spec, metavar="ID=URL")
    _common(add, pool=False)
    add.set_defaults(func=runner(_member_add))
    remove = member_actions.add_parser(
        "remove", help="remove a node for good (its ID can never rejoin)"
    )
    remove.add_argument("id", type=_member_id, metavar="ID")
    _common(remove, pool=False)
    remove.set_defaults(func=runner(_member_remove))
    members = member_actions.add_parser(
        "list", help="each node's ID, URL, role, match index and reachability"
    )
    _common(members, pool=False)
    members.set_defaults(func=runner(_member_list))


def runner(command: Command) -> Callable[[argparse.Namespace], None]:
    def run(args: argparse.Namespace) -> None:
        try:
            urls = split_urls(args.control or [os.environ.get(CONTROL_ENV, DEFAULT_CONTROL)])
            token = load_token(args.token_file)
            result = asyncio.run(_call(command, urls, token, args))
        except (ControlError, TokenError) as exc:
            sys.exit(f"ringleader {args.command}: error: {exc}")
        if result is not None:
            print(json.dumps(result, indent=2) if args.json else result)

    return run


async def _call(
    command: Command, urls: list[str], token: str | None, args: argparse.Namespace
) -> Any:
    async with ControlClient(urls, token) as client:
        return await command(client, args)


def _headers(args: argparse.Namespace) -> dict[str, str]:
    who = args.who or os.environ.get("USER") or "operator"
    # One id for every retry of this command, so it applies once whichever node answers.
    return {"x-ringleader-who": f"cli:{who}", "x-request-id": uuid.uuid4().hex}


def _pool_path(args: argparse.Namespace) -> str:
    return f"/v1/pools/{quote(args.pool, safe='')}"


async def backend_change(client: ControlClient, args: argparse.Namespace) -> Any:
    base = _pool_path(args) + "/backends"
    body: dict[str, Any] = {"why": args.why}
    if args.action == "add":
        method, path = "POST", base
        body["url"] = args.target
    elif args.action == "remove":
        method, path = "DELETE", f"{base}/{quote(args.target, safe='')}"
    else:
        method, path = "POST", f"{base}/{quote(args.target, safe='')}/{args.action}"
    reply = await client.request(method, path, json=body, headers=_headers(args))
    unchanged = " (no change)" if reply.body.get("unchanged") else ""
    line = (
        f"{args.action} {args.target}: pool {args.pool} at epoch {reply.body['epoch']}{unchanged}"
    )
    return await _committed(client, args, reply.body, line)


async def _committed(
    client: ControlClient, args: argparse.Namespace, body: dict[str, Any], line: str
) -> Any:
    """What a ring change prints: `line` (or `body` with --json), and with --wait the
    progress of the proxies towards its epoch, which goes to stderr under --json."""
    if not args.wait:
        return body if args.json else line
    if not args.json:
        print(line, flush=True)
    progress = sys.stderr if args.json else sys.stdout
    await wait_for_proxies(client, args.pool, int(body["epoch"]), args.wait_timeout, progress)
    return body if args.json else None


async def wait_for_proxies(
    client: ControlClient, pool: str, epoch: int, within: float, out: TextIO
) -> None:
    """Returns once every proxy that reported within the detector's window routes on
    `epoch` or later, printing progress to `out`; raises ControlError naming the proxies
    still behind after `within` seconds. With no reporting proxy there is nothing to wait
    for, and it says so."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    path = f"/v1/pools/{quote(pool, safe='')}/proxies"
    shown: tuple[int, int] | None = None
    behind: list[ReportingProxy] = []
    reporting = 0
    try:
        async with asyncio.timeout(within):
            while True:
                reply = await client.request("GET", path)
                try:
                    view = ProxiesDocument.from_json(reply.body)
                except WireError as exc:
                    raise ControlError(f"{reply.url}: {exc}") from None
                recent = view.reporting()
                if not recent:
                    window = f"{view.window_seconds:g} s"
                    print(f"epoch {epoch}: no proxy reported in the last {window}; "
                          "nothing to wait for", file=out, flush=True)  # fmt: skip
                    return
                reporting = len(recent)
                behind = [p for p in recent if p.epoch is None or p.epoch < epoch]
                routed = (reporting - len(behind), reporting)
                if not behind:
                    took = loop.time() - start
                    print(f"epoch {epoch}: {routed[0]}/{routed[1]} proxies in {took:.2f} s",
                          file=out, flush=True)  # fmt: skip
                    return
                if routed != shown:
                    print(f"epoch {epoch}: {routed[0]}/{routed[1]} proxies", file=out, flush=True)
                    shown = routed
                await asyncio.sleep(WAIT_POLL_SECONDS)
    except TimeoutError:
        if not reporting:
            raise ControlError(
                f"epoch {epoch}: no answer from the proxies view within {within:g} s"
            ) from None
        laggards = ", ".join(
            f"{p.proxy} at epoch {'unknown' if p.epoch is None else p.epoch}" for p in behind
        )
        raise ControlError(
            f"epoch {epoch}: {reporting - len(behind)}/{reporting} proxies after {within:g} s; "
            f"behind: {laggards}"
        ) from None


async def _backend_list(client: ControlClient, args: argparse.Namespace) -> Any:
    reply = await client.request("GET", _pool_path(args) + "/backends")
    if args.json:
        return reply.body
    rows = [
        (b["name"], b["url"], str(b["weight"]), b["admin"], b["health"],
         "yes" if b["in_ring"] else "no", _time(b["health_since"]), b["health_reason"] or "-")
        for b in reply.body["backends"]
    ]  # fmt: skip
    header = ("NAME", "URL", "WEIGHT", "ADMIN", "HEALTH", "IN RING", "SINCE", "REASON")
    return f"pool {args.pool}, epoch {reply.body['epoch']}\n" + _table(header, rows)


async def pool_create(client: ControlClient, args: argparse.Namespace) -> Any:
    reply = await client.request(
        "POST", "/v1/pools", json={"pool": args.name, "hash": args.hash}, headers=_headers(args)
    )
    return reply.body if args.json else f"pool {args.name}: epoch {reply.body['epoch']}"


async def _pool_list(client: ControlClient, args: argparse.Namespace) -> Any:
    reply = await client.request("GET", "/v1/pools")
    if args.json:
        return reply.body
    rows = [(p["pool"], str(p["epoch"]), p["hash"], p["distribution"], str(len(p["backends"])))
            for p in reply.body["pools"]]  # fmt: skip
    return _table(("POOL", "EPOCH", "HASH", "DISTRIBUTION", "BACKENDS"), rows)


async def _ring(client: ControlClient, args: argparse.Namespace) -> Any:
    reply = await client.request("GET", _pool_path(args) + "/ring")
    try:
        ring = RingDocument.from_json(reply.body)
    except WireError as exc:
        raise ControlError(f"{reply.url}: {exc}") from None
    if args.key is None:
        if args.json:
            return ring.to_json()
        rows = [(b.name, b.url, str(b.weight)) for b in ring.backends]
        title = f"pool {ring.pool}, epoch {ring.epoch}, {ring.distribution}/{ring.hash}"
        return title + "\n" + _table(("NAME", "URL", "WEIGHT"), rows)
    if not ring.backends:
        raise ControlError(f"pool {args.pool} has no backends in its ring at epoch {ring.epoch}")
    specs = [b.spec() for b in ring.backends]
    key_hash, point, owner = KetamaRing(specs, ring.hash).locate(args.key.encode())
    located = {
        "key": args.key, "pool": ring.pool, "epoch": ring.epoch, "backend": owner.name,
        "url": owner.url, "hash": ring.hash, "key_hash": key_hash, "point": point,
    }  # fmt: skip
    if args.json:
        return located
    return (
        f"{args.key!r} -> {owner.name} ({owner.url})\n"
        f"  pool {ring.pool} at epoch {ring.epoch}: {ring.hash}({args.key!r}) = "
        f"{key_hash:#010x}; the first ketama point at or after it is {point:#010x}, "
        f"owned by {owner.name}"
    )


async def _status(client: ControlClient, args: argparse.Namespace) -> Any:
    first = (await client.request("GET", "/v1/status")).body
    peers: dict[str, str] = first.get("peers", {})

    async def one(ident: str, url: str) -> dict[str, Any]:
        try:
            async with ControlClient([url], deadline=0.0, timeout=2.0) as single:
                return dict((await single.request("GET", "/v1/status")).body)
        except ControlError as exc:
            return {"id": int(ident), "role": "unreachable", "error": str(exc)}

    nodes = await asyncio.gather(*(one(i, u) for i, u in sorted(peers.items())))
    if args.json:
        return {"nodes": nodes}
    rows = [
        (str(n["id"]), peers[str(n["id"])], n["role"], str(n.get("term", "-")),
         str(n.get("leader", "-")), str(n.get("commit_index", "-")),
         str(n.get("applied_index", "-")))
        for n in nodes
    ]  # fmt: skip
    return _table(("ID", "URL", "ROLE", "TERM", "LEADER", "COMMIT", "APPLIED"), rows)


async def _events(client: ControlClient, args: argparse.Namespace) -> Any:
    reply = await client.request(
        "GET", "/v1/events", params={"pool": args.pool, "limit": args.limit}
    )
    if args.json:
        return reply.body
    rows = [
        (_time(e["time"]), str(e["epoch"]), e["kind"], e["backend"] or "-", e["who"],
         e["why"] or "-", json.dumps(e["evidence"]) if e["evidence"] is not None else "-")
        for e in reply.body["events"]
    ]  # fmt: skip
    return _table(("TIME", "EPOCH", "CHANGE", "BACKEND", "WHO", "WHY", "EVIDENCE"), rows)


async def _rollback(client: ControlClient, args: argparse.Namespace) -> Any:
    reply = await client.request(
        "POST", _pool_path(args) + "/rollback", json={"epoch": args.epoch, "why": args.why},
        headers=_headers(args),
    )  # fmt: skip
    epoch = reply.body["epoch"]
    line = f"pool {args.pool}: membership of epoch {args.epoch} restored as epoch {epoch}"
    return await _committed(client, args, reply.body, line)


def _member_id(text: str) -> int:
    if not text.isdigit() or int(text) <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive whole-number ID, got {text!r}")
    return int(text)


def _member_spec(text: str) -> tuple[int, str]:
    ident, sep, url = text.partition("=")
    if not sep or not url.startswith(("http://", "https://")):
        raise argparse.ArgumentTypeError(f"expected ID=http://HOST:PORT, got {text!r}")
    return _member_id(ident), url.rstrip("/")


async def _member_add(client: ControlClient, args: argparse.Namespace) -> Any:
    node_id, url = args.member
    reply = await client.request(
        "POST", "/v1/members", json={"id": node_id, "url": url}, headers=_headers(args)
    )
    if args.json:
        return reply.body
    return f"node {node_id} ({url}) is a member; it becomes a voter once caught up"


async def _member_remove(client: ControlClient, args: argparse.Namespace) -> Any:
    reply = await client.request("DELETE", f"/v1/members/{args.id}", headers=_headers(args))
    return reply.body if args.json else f"node {args.id} removed; its ID can never rejoin"


async def _member_list(client: ControlClient, args: argparse.Namespace) -> Any:
    reply = await client.request("GET", "/v1/members")
    if args.json:
        return reply.body
    rows = [
        (str(m["id"]), m["url"], m["role"], "-" if m["match"] is None else str(m["match"]),
         "yes" if m["reachable"] else "no")
        for m in reply.body["members"]
    ]  # fmt: skip
    removed = ", ".join(map(str, reply.body["removed"])) or "none"
    title = f"leader {reply.body['leader']}, term {reply.body['term']}; removed IDs: {removed}"
    return title + "\n" + _table(("ID", "URL", "ROLE", "MATCH", "REACHABLE"), rows)


def _time(ts: float) -> str:
    if not ts:
        return "-"
    return datetime.datetime.fromtimestamp(ts, datetime.UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(str(c)) for c in col) for col in zip(header, *rows, strict=False)]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=False)).rstrip()
             for r in (header, *rows)]  # fmt: skip
    return "\n".join(lines) if rows else "\n".join(lines) + "\n(none)"
