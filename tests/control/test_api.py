"""The control API contract, against a real 3-node `ringleader control` cluster.

Reads are linearizable unless `?stale=1`; followers forward reads and writes to the leader;
the ring watch long-polls; every bad request gets a 4xx with a JSON error; writes and peer
RPC need the cluster token; a request id makes a retried write apply once.
"""

from __future__ import annotations

import socket
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from control.raft.codec import encode_message
from control.raft.messages import RequestVote
from ringleader.wire import NO_FORWARD
from tests.support.control_cluster import ControlCluster, backend_url, module_cluster
from tests.support.servers import wait_until

BACKENDS = "/v1/pools/default/backends"
BACKENDS_ROUTE = "/v1/pools/{pool}/backends"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlCluster]:
    yield from module_cluster(tmp_path_factory, "api")


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def roles(cluster: ControlCluster) -> tuple[int, list[int]]:
    leader = cluster.wait_leader()
    return leader, cluster.followers(leader)


def api_count(cluster: ControlCluster, node: int, route: str, code: str = "200") -> float:
    return cluster.metric(
        node, "ringleader_control_api_requests_total", {"route": route, "code": code}
    )


# -- status and probes -----------------------------------------------------------------------------


def test_status_has_the_contract_fields_and_one_leader(cluster: ControlCluster) -> None:
    leader = cluster.wait_leader()
    statuses = cluster.statuses()
    assert set(statuses) == {1, 2, 3}
    for node_id, s in statuses.items():
        assert {"id", "role", "term", "leader", "commit_index", "applied_index"} <= set(s)
        assert s["id"] == node_id
        assert s["role"] in ("leader", "follower", "candidate")
        assert s["leader"] == leader
        assert s["applied_index"] <= s["commit_index"]
    assert [i for i, s in statuses.items() if s["role"] == "leader"] == [leader]


def test_healthz_and_readyz_on_every_node(cluster: ControlCluster) -> None:
    leader = cluster.wait_leader()
    # The leader's no-op commit reaches followers with the next heartbeat.
    commit = cluster.statuses()[leader]["commit_index"]
    cluster.wait_applied(commit, [1, 2, 3])
    for node_id in cluster.nodes:
        health = cluster.http.get(cluster.url(node_id) + "/healthz")
        assert health.status_code == 200
        assert health.json() == {"status": "ok"}
        ready = cluster.http.get(cluster.url(node_id) + "/readyz")
        assert ready.status_code == 200, ready.text
        assert ready.json()["status"] == "ready"


def test_metrics_exposition(cluster: ControlCluster) -> None:
    leader = cluster.wait_leader()
    r = cluster.http.get(cluster.url(leader) + "/metrics")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/plain")
    assert "ringleader_raft_leader 1.0" in r.text
    assert "ringleader_raft_has_leader 1.0" in r.text
    assert "ringleader_raft_peer_rpc_rejected_total" in r.text


# -- reads and writes through any node -------------------------------------------------------------


def test_write_sent_to_a_follower_is_committed_by_the_leader(cluster: ControlCluster) -> None:
    leader, followers = roles(cluster)
    name = unique("via-follower")
    r = cluster.write(followers[0], "POST", BACKENDS, {"url": backend_url(name)})
    assert r.status_code == 200, r.text
    epoch = r.json()["epoch"]
    # Acknowledged means applied on the leader: its local (stale) view already has it.
    assert name in cluster.backend_names(leader, stale=True)
    ring = cluster.http.get(cluster.url(leader) + "/v1/pools/default/ring", params={"stale": "1"})
    assert ring.json()["epoch"] == epoch
    events = cluster.http.get(cluster.url(leader) + "/v1/events").json()["events"]
    assert [e["kind"] for e in events if e["backend"] == name] == ["add"]


def test_linearizable_reads_on_followers_see_every_acknowledged_write(
    cluster: ControlCluster,
) -> None:
    leader, followers = roles(cluster)
    for i in range(12):
        name = unique(f"ryw{i}")
        r = cluster.write(leader, "POST", BACKENDS, {"url": backend_url(name)})
        assert r.status_code == 200, r.text
        reader = followers[i % 2]
        assert name in cluster.backend_names(reader), f"read on {reader} missed {name}"


def test_follower_forwards_linearizable_reads_but_serves_stale_ones_itself(
    cluster: ControlCluster,
) -> None:
    leader, followers = roles(cluster)
    follower = followers[0]
    before = api_count(cluster, leader, BACKENDS_ROUTE)
    cluster.backend_names(follower, stale=True)
    cluster.backend_names(follower, stale=True)
    assert api_count(cluster, leader, BACKENDS_ROUTE) == before
    cluster.backend_names(follower)
    assert api_count(cluster, leader, BACKENDS_ROUTE) == before + 1


def test_pools_create_and_list(cluster: ControlCluster) -> None:
    leader, followers = roles(cluster)
    pool = unique("pool")
    r = cluster.write(followers[1], "POST", "/v1/pools", {"pool": pool, "hash": "md5"})
    assert r.status_code == 200, r.text
    again = cluster.write(leader, "POST", "/v1/pools", {"pool": pool, "hash": "md5"})
    assert again.json().get("unchanged") is True
    pools = cluster.http.get(cluster.url(followers[0]) + "/v1/pools").json()["pools"]
    mine = [p for p in pools if p["pool"] == pool]
    assert len(mine) == 1
    assert mine[0]["hash"] == "md5"
    assert mine[0]["backends"] == []
    assert any(p["pool"] == "default" for p in pools)


def test_ring_lists_members_in_insertion_order_and_drained_ones_leave(
    cluster: ControlCluster,
) -> None:
    leader, _ = roles(cluster)
    pool = unique("ringpool")
    assert cluster.write(leader, "POST", "/v1/pools", {"pool": pool}).status_code == 200
    names = [unique("m") for _ in range(3)]
    for port, name in enumerate(names, start=20001):
        r = cluster.write(leader, "POST", f"/v1/pools/{pool}/backends",
                          {"url": backend_url(name, port)})  # fmt: skip
        assert r.status_code == 200, r.text
    ring = cluster.http.get(f"{cluster.url(leader)}/v1/pools/{pool}/ring").json()
    assert [b["name"] for b in ring["backends"]] == names
    drained = cluster.write(leader, "POST", f"/v1/pools/{pool}/backends/{names[1]}/drain")
    assert drained.status_code == 200
    assert drained.json()["epoch"] > ring["epoch"]
    ring2 = cluster.http.get(f"{cluster.url(leader)}/v1/pools/{pool}/ring").json()
    assert [b["name"] for b in ring2["backends"]] == [names[0], names[2]]
    listed = cluster.http.get(f"{cluster.url(leader)}/v1/pools/{pool}/backends").json()
    states = {b["name"]: (b["admin"], b["in_ring"]) for b in listed["backends"]}
    assert states[names[1]] == ("draining", False)


# -- the ring watch --------------------------------------------------------------------------------


def test_ring_watch_returns_when_the_epoch_passes_wait_epoch(cluster: ControlCluster) -> None:
    leader, followers = roles(cluster)
    watcher = followers[0]
    epoch = cluster.http.get(cluster.url(leader) + "/v1/pools/default/ring").json()["epoch"]
    cluster.wait_applied(epoch, [watcher])
    answer: list[tuple[float, httpx.Response]] = []

    def watch() -> None:
        started = time.monotonic()
        r = httpx.get(
            cluster.url(watcher) + "/v1/pools/default/ring",
            params={"wait_epoch": epoch, "timeout": 20}, timeout=30,
        )  # fmt: skip
        answer.append((time.monotonic() - started, r))

    thread = threading.Thread(target=watch)
    thread.start()
    # The watch is parked once the node's watcher gauge shows it.
    wait_until(lambda: cluster.metric(watcher, "ringleader_control_watchers") >= 1, 10,
               "the watch to be parked")  # fmt: skip
    assert not answer, "the watch returned before the epoch changed"
    write = cluster.write(leader, "POST", BACKENDS, {"url": backend_url(unique("watched"))})
    assert write.status_code == 200
    thread.join(15)
    assert answer, "the watch did not return after the ring changed"
    elapsed, r = answer[0]
    assert r.status_code == 200
    assert r.json()["epoch"] >= write.json()["epoch"] > epoch
    assert elapsed < 10


def test_ring_watch_times_out_with_the_unchanged_ring(cluster: ControlCluster) -> None:
    leader, _ = roles(cluster)
    epoch = cluster.http.get(cluster.url(leader) + "/v1/pools/default/ring").json()["epoch"]
    started = time.monotonic()
    r = cluster.http.get(
        cluster.url(leader) + "/v1/pools/default/ring",
        params={"wait_epoch": epoch, "timeout": 0.4}, timeout=5,
    )  # fmt: skip
    elapsed = time.monotonic() - started
    assert r.status_code == 200
    assert r.json()["epoch"] == epoch
    assert elapsed >= 0.35


def test_ring_watch_behind_the_current_epoch_returns_at_once(cluster: ControlCluster) -> None:
    leader, _ = roles(cluster)
    started = time.monotonic()
    r = cluster.http.get(
        cluster.url(leader) + "/v1/pools/default/ring",
        params={"wait_epoch": 0, "timeout": 20}, timeout=25,
    )  # fmt: skip
    assert r.status_code == 200
    assert r.json()["epoch"] > 0
    assert time.monotonic() - started < 5


# -- bad requests ----------------------------------------------------------------------------------

DUPLICATE = "dup-fixed"


@pytest.fixture(scope="module")
def duplicate(cluster: ControlCluster) -> str:
    cluster.write_acked("POST", BACKENDS, {"url": backend_url(DUPLICATE, 30001)})
    return DUPLICATE


BAD_REQUESTS: list[tuple[str, str, str, Any, dict[str, str] | None, int, str | None]] = [
    # (id, method, path, json body or raw bytes, params, status, error code)
    ("unknown-pool-list", "GET", "/v1/pools/nope/backends", None, None, 404, "unknown_pool"),
    ("unknown-pool-ring", "GET", "/v1/pools/nope/ring", None, None, 404, "unknown_pool"),
    ("unknown-pool-watch", "GET", "/v1/pools/nope/ring", None, {"wait_epoch": "0", "timeout": "1"},
     404, "unknown_pool"),
    ("unknown-pool-add", "POST", "/v1/pools/nope/backends", {"url": backend_url("x")}, None,
     404, "unknown_pool"),
    ("duplicate-name", "POST", BACKENDS, {"url": backend_url(DUPLICATE, 30002)}, None,
     409, "duplicate_backend"),
    ("malformed-url", "POST", BACKENDS, {"url": "not a url"}, None, 400, "bad_backend"),
    ("wrong-scheme", "POST", BACKENDS, {"url": "http://10.0.0.1:80"}, None, 400, "bad_backend"),
    ("negative-weight", "POST", BACKENDS, {"url": "memcached://10.0.0.1:11211?weight=-2"}, None,
     400, "bad_backend"),
    ("zero-weight", "POST", BACKENDS, {"url": "memcached://10.0.0.1:11211?weight=0"}, None,
     400, "bad_backend"),
    ("url-not-string", "POST", BACKENDS, {"url": 5}, None, 400, "bad_backend"),
    # Never into the replicated log: ?password_file= instead.
    ("inline-password", "POST", BACKENDS, {"url": "redis://:hunter2@10.0.0.1:6379/0"}, None,
     400, "bad_backend"),
    ("no-url", "POST", BACKENDS, {}, None, 400, "bad_backend"),
    ("bad-json", "POST", BACKENDS, b"{not json", None, 400, "bad_json"),
    ("json-not-object", "POST", BACKENDS, b"[1, 2]", None, 400, "bad_json"),
    ("body-too-large", "POST", BACKENDS, b"{" + b" " * (1 << 20) + b"}", None, 413, "too_large"),
    ("remove-unknown", "DELETE", BACKENDS + "/nope", None, None, 404, "unknown_backend"),
    ("drain-unknown", "POST", BACKENDS + "/nope/drain", None, None, 404, "unknown_backend"),
    ("rollback-negative", "POST", "/v1/pools/default/rollback", {"epoch": -1}, None,
     400, "bad_request"),
    ("rollback-unknown", "POST", "/v1/pools/default/rollback", {"epoch": 10**9}, None,
     404, "unknown_epoch"),
    ("pool-bad-name", "POST", "/v1/pools", {"pool": "no spaces!"}, None, 400, "bad_pool"),
    ("pool-bad-hash", "POST", "/v1/pools", {"pool": "okname", "hash": "crc"}, None,
     400, "bad_hash"),
    ("watch-bad-epoch", "GET", "/v1/pools/default/ring", None, {"wait_epoch": "x"},
     400, "bad_request"),
    ("watch-negative-timeout", "GET", "/v1/pools/default/ring", None,
     {"wait_epoch": "1", "timeout": "-1"}, 400, "bad_request"),
    ("watch-nan-timeout", "GET", "/v1/pools/default/ring", None,
     {"wait_epoch": "0", "timeout": "nan"}, 400, "bad_request"),
    ("report-unknown-pool", "POST", "/v1/pools/nope/reports", {"proxy": "p", "backends": {}},
     None, 404, "unknown_pool"),
    ("report-no-proxy", "POST", "/v1/pools/default/reports", {"backends": {}}, None,
     400, "bad_report"),
    ("report-bad-json", "POST", "/v1/pools/default/reports", b"{", None, 400, "bad_json"),
    ("events-bad-limit", "GET", "/v1/events", None, {"limit": "many"}, 400, "bad_request"),
    # Routing errors are bad requests too (see the report: starlette's defaults are text).
    ("unknown-route", "GET", "/v1/nothing-here", None, None, 404, None),
    ("wrong-method", "PUT", BACKENDS, {"url": backend_url("x")}, None, 405, None),
]  # fmt: skip


@pytest.mark.parametrize("where", ["leader", "follower"])
@pytest.mark.parametrize(
    ("method", "path", "body", "params", "status", "code"),
    [pytest.param(*case[1:], id=case[0]) for case in BAD_REQUESTS],
)
def test_bad_requests_get_a_4xx_with_a_json_error(
    cluster: ControlCluster, duplicate: str, where: str, method: str, path: str, body: Any,
    params: dict[str, str] | None, status: int, code: str | None,
) -> None:  # fmt: skip
    leader, followers = roles(cluster)
    node = leader if where == "leader" else followers[0]
    kwargs: dict[str, Any] = {"content": body} if isinstance(body, bytes) else {"json": body}
    r = cluster.http.request(
        method, cluster.url(node) + path, params=params, headers=cluster.headers(),
        timeout=10, **kwargs,
    )  # fmt: skip
    assert r.status_code == status, r.text
    assert r.headers.get("content-type", "").startswith("application/json"), r.text
    assert "hunter2" not in r.text  # an inline password is never echoed
    payload = r.json()
    assert isinstance(payload, dict)
    assert isinstance(payload.get("message"), str)
    assert payload["message"]
    if code is not None:
        assert payload["error"] == code
    else:
        assert isinstance(payload.get("error"), str)


def test_a_follower_turns_away_a_report_that_asks_not_to_be_forwarded(
    cluster: ControlCluster,
) -> None:
    leader, followers = roles(cluster)
    report = {"proxy": unique("host/p"), "backends": {"b": {"state": "up"}}}

    def post(node: int, **extra: str) -> httpx.Response:
        url = cluster.url(node) + "/v1/pools/default/reports"
        return cluster.http.post(url, json=report, headers={**cluster.headers(), **extra})

    turned_away = post(followers[0], **{NO_FORWARD: "1"})
    assert turned_away.status_code == 503, turned_away.text
    assert turned_away.json()["error"] == "not_leader"
    assert post(followers[0]).status_code == 204  # forwarded, as before
    assert post(leader, **{NO_FORWARD: "1"}).status_code == 204


def test_refused_commands_change_nothing(cluster: ControlCluster, duplicate: str) -> None:
    leader, _ = roles(cluster)
    before = cluster.http.get(cluster.url(leader) + BACKENDS).json()
    r = cluster.write(leader, "POST", BACKENDS, {"url": backend_url(duplicate, 30003)})
    assert r.status_code == 409
    after = cluster.http.get(cluster.url(leader) + BACKENDS).json()
    assert after["epoch"] == before["epoch"]
    urls = {b["name"]: b["url"] for b in after["backends"]}
    assert urls[duplicate] == backend_url(duplicate, 30001) + "&weight=1"


# -- the token -------------------------------------------------------------------------------------


@pytest.mark.parametrize("auth", [None, "Bearer wrong-token", "Basic abc", "Bearer"])
def test_writes_without_the_token_are_refused_and_counted(
    cluster: ControlCluster, auth: str | None
) -> None:
    leader, followers = roles(cluster)
    for node in (leader, followers[0]):
        before = cluster.metric(node, "ringleader_control_unauthorized_total")
        name = unique("noauth")
        headers = {"authorization": auth} if auth is not None else {}
        r = cluster.http.post(cluster.url(node) + BACKENDS, json={"url": backend_url(name)},
                              headers=headers)  # fmt: skip
        assert r.status_code == 401
        assert r.json()["error"] == "unauthorized"
        assert cluster.metric(node, "ringleader_control_unauthorized_total") == before + 1
        assert name not in cluster.backend_names(leader)


@pytest.mark.parametrize("auth", [None, "Bearer wrong-token", f"Basic {'x' * 8}"])
def test_peer_rpc_without_the_token_is_rejected_and_counted(
    cluster: ControlCluster, auth: str | None
) -> None:
    leader, followers = roles(cluster)
    node = followers[0]
    labels = {"reason": "token"}
    before = cluster.metric(node, "ringleader_raft_peer_rpc_rejected_total", labels)
    term_before = cluster.statuses([node])[node]["term"]
    headers = {"authorization": auth} if auth is not None else {}
    # A leadership-transfer vote request for a far-future term: were it stepped, the node's
    # term would jump (transfer requests bypass the leader lease).
    other = next(i for i in cluster.nodes if i not in (leader, node))
    vote = [encode_message(RequestVote(other, node, term_before + 100, 10**6,
                                       term_before + 99, False, True))]  # fmt: skip
    for _ in range(3):
        r = cluster.http.post(cluster.url(node) + "/raft/messages", json=vote, headers=headers)
        assert r.status_code == 401
        assert r.json()["error"] == "unauthorized"
    assert cluster.metric(node, "ringleader_raft_peer_rpc_rejected_total", labels) == before + 3
    assert cluster.statuses([node])[node]["term"] == term_before
    assert cluster.current_leader() == leader


def test_malformed_peer_rpc_is_rejected_and_counted(cluster: ControlCluster) -> None:
    _, followers = roles(cluster)
    node = followers[1]
    labels = {"reason": "malformed"}
    before = cluster.metric(node, "ringleader_raft_peer_rpc_rejected_total", labels)
    for body in (b"{", b'[{"type": "NoSuchMessage"}]', b'"text"'):
        r = cluster.http.post(cluster.url(node) + "/raft/messages", content=body,
                              headers=cluster.headers())  # fmt: skip
        assert r.status_code == 400, (body, r.text)
        assert r.json()["error"] == "bad_message"
    assert cluster.metric(node, "ringleader_raft_peer_rpc_rejected_total", labels) == before + 3
    ok = cluster.http.post(cluster.url(node) + "/raft/messages", content=b"[]",
                           headers=cluster.headers())  # fmt: skip
    assert ok.status_code == 204


# -- request ids -----------------------------------------------------------------------------------


def test_a_retried_command_applies_once(cluster: ControlCluster) -> None:
    leader, followers = roles(cluster)
    name = unique("retried")
    request_id = uuid.uuid4().hex
    body = {"url": backend_url(name)}
    first = cluster.write(followers[0], "POST", BACKENDS, body, request_id)
    assert first.status_code == 200, first.text
    second = cluster.write(followers[1], "POST", BACKENDS, body, request_id)
    assert second.status_code == 200
    assert second.json() == first.json()
    assert second.json().get("unchanged") is None  # the original result, not a second apply
    removed = cluster.write(leader, "DELETE", f"{BACKENDS}/{name}")
    assert removed.status_code == 200
    assert name not in cluster.backend_names(leader)
    # A late retry of the add must not bring the removed backend back.
    third = cluster.write(leader, "POST", BACKENDS, body, request_id)
    assert third.status_code == 200
    assert third.json() == first.json()
    assert name not in cluster.backend_names(leader)
    events = cluster.http.get(cluster.url(leader) + "/v1/events", params={"limit": 1000})
    kinds = [e["kind"] for e in events.json()["events"] if e["backend"] == name]
    assert kinds == ["add", "remove"]


def test_a_retried_refusal_is_the_same_refusal(cluster: ControlCluster) -> None:
    leader, followers = roles(cluster)
    name = unique("refused")
    request_id = uuid.uuid4().hex
    r1 = cluster.write(followers[0], "DELETE", f"{BACKENDS}/{name}", None, request_id)
    assert r1.status_code == 404
    # The backend now exists, but the retried delete is answered from memory, not re-run.
    cluster.write_acked("POST", BACKENDS, {"url": backend_url(name)})
    r2 = cluster.write(leader, "DELETE", f"{BACKENDS}/{name}", None, request_id)
    assert r2.status_code == 404
    assert r2.json() == r1.json()
    assert name in cluster.backend_names(leader)


def test_events_record_who_and_why(cluster: ControlCluster) -> None:
    leader, followers = roles(cluster)
    name = unique("explained")
    r = cluster.http.post(
        cluster.url(followers[0]) + BACKENDS,
        json={"url": backend_url(name), "why": "capacity for the sale"},
        headers={**cluster.headers(), "x-ringleader-who": "cli:alice"},
    )  # fmt: skip
    assert r.status_code == 200, r.text
    events = cluster.http.get(cluster.url(leader) + "/v1/events", params={"limit": 5}).json()
    mine = [e for e in events["events"] if e["backend"] == name]
    assert len(mine) == 1
    assert mine[0]["who"] == "cli:alice"
    assert mine[0]["why"] == "capacity for the sale"
    assert mine[0]["epoch"] == r.json()["epoch"]
    assert len(events["events"]) <= 5


# -- refusing before the body ----------------------------------------------------------------------

HUGE = 100 << 20


@pytest.mark.parametrize(
    ("method", "path", "authorized", "status"),
    [
        ("POST", BACKENDS, False, 401),
        ("POST", BACKENDS, True, 413),
        ("DELETE", BACKENDS + "/x", False, 401),
        ("POST", "/v1/pools", True, 413),
        ("POST", "/v1/pools/default/reports", False, 401),
        ("POST", "/v1/pools/default/rollback", True, 413),
        ("POST", "/raft/messages", False, 401),
    ],
)
def test_a_huge_body_is_refused_before_it_is_read(
    cluster: ControlCluster, method: str, path: str, authorized: bool, status: int
) -> None:
    _, followers = roles(cluster)
    url = httpx.URL(cluster.url(followers[0]))
    auth = f"authorization: Bearer {cluster.token}\r\n" if authorized else ""
    head = (f"{method} {path} HTTP/1.1\r\nhost: {url.host}\r\ncontent-type: application/json\r\n"
            f"{auth}content-length: {HUGE}\r\n\r\n")  # fmt: skip
    assert url.port is not None
    with socket.create_connection((url.host, url.port), timeout=5) as sock:
        # A few bytes of the promised 100 MB, and no more: an answer proves none was awaited.
        sock.sendall(head.encode() + b'{"url": "')
        started = time.monotonic()
        answer = sock.recv(65536)
        waited = time.monotonic() - started
    assert answer.startswith(f"HTTP/1.1 {status} ".encode()), answer[:200]
    assert b"connection: close" in answer.lower()
    assert waited < 2.0


# -- request ids -----------------------------------------------------------------------------------


def test_every_answer_names_its_request_id(cluster: ControlCluster) -> None:
    leader, followers = roles(cluster)
    made = cluster.http.get(cluster.url(followers[0]) + "/v1/status")
    assert len(made.headers["x-request-id"]) >= 16
    again = cluster.http.get(cluster.url(followers[0]) + "/v1/status")
    assert again.headers["x-request-id"] != made.headers["x-request-id"]
    given = cluster.http.get(cluster.url(leader) + "/v1/pools", headers={"x-request-id": "abc-1"})
    assert given.headers["x-request-id"] == "abc-1"
    name = unique("ided")
    write = cluster.http.post(cluster.url(followers[0]) + BACKENDS, json={"url": backend_url(name)},
                              headers={"authorization": f"Bearer {cluster.token}"})  # fmt: skip
    assert write.status_code == 200, write.text
    assert write.headers["x-request-id"]
    refused = cluster.http.post(cluster.url(leader) + BACKENDS, json={"url": 5},
                                headers={"x-request-id": "given-2"})  # fmt: skip
    assert (refused.status_code, refused.headers["x-request-id"]) == (401, "given-2")
    unmatched = cluster.http.get(cluster.url(leader) + "/v1/nothing", headers={"x-request-id": "q"})
    assert (unmatched.status_code, unmatched.headers["x-request-id"]) == (404, "q")


def test_a_503_names_the_id_that_makes_its_retry_apply_once(cluster: ControlCluster) -> None:
    leader, followers = roles(cluster)
    name = unique("rolled")
    added = cluster.write(leader, "POST", BACKENDS, {"url": backend_url(name)})
    assert added.status_code == 200, added.text
    epoch = added.json()["epoch"]
    # A request marked as forwarded that reaches a follower cannot go on: a 503.
    headers = {"authorization": f"Bearer {cluster.token}", "x-ringleader-forwarded": "1"}
    failed = cluster.http.post(cluster.url(followers[0]) + "/v1/pools/default/rollback",
                               json={"epoch": epoch}, headers=headers)  # fmt: skip
    assert failed.status_code == 503, failed.text
    request_id = failed.headers["x-request-id"]
    assert request_id in failed.json()["message"]
    first = cluster.write(leader, "POST", "/v1/pools/default/rollback", {"epoch": epoch},
                          request_id)  # fmt: skip
    assert first.status_code == 200, first.text
    assert first.headers["x-request-id"] == request_id
    retried = cluster.write(followers[1], "POST", "/v1/pools/default/rollback",
                            {"epoch": epoch}, request_id)  # fmt: skip
    assert retried.json() == first.json()
    after = cluster.http.get(cluster.url(leader) + BACKENDS).json()
    assert after["epoch"] == first.json()["epoch"]
    assert cluster.write(leader, "DELETE", f"{BACKENDS}/{name}").status_code == 200
