"""The membership API (`/v1/members`) against a real 3-node `ringleader control` cluster:
listing, adding a learner, removing members, the token, bad input, retries, and removing
the leader (which hands leadership over first, then stops for good)."""

from __future__ import annotations

import socket
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.support.control_cluster import ControlCluster, module_cluster
from tests.support.servers import LOOPBACK, free_port, wait_until

MEMBERS = "/v1/members"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlCluster]:
    yield from module_cluster(tmp_path_factory, "members")


def listing(cluster: ControlCluster, node: int) -> dict[str, Any]:
    r = cluster.http.get(cluster.url(node) + MEMBERS, timeout=10)
    assert r.status_code == 200, r.text
    return dict(r.json())


def roles(body: dict[str, Any]) -> dict[int, str]:
    return {m["id"]: m["role"] for m in body["members"]}


def test_list_shows_voters_with_match_indexes_from_the_leader(cluster: ControlCluster) -> None:
    leader = cluster.wait_leader()
    follower = cluster.followers(leader)[0]
    body: dict[str, Any] = {}

    def heard_from_all() -> bool:
        # A new leader commits once one follower answers; the other's match index and
        # reachability come with its own first answer, a moment later on a loaded machine.
        body.update(listing(cluster, follower))  # forwarded: the leader knows the matches
        return all(m["match"] and m["reachable"] for m in body["members"])

    wait_until(heard_from_all, 10, "the leader to hear from every member")
    assert roles(body) == {1: "voter", 2: "voter", 3: "voter"}
    assert body["leader"] == leader
    for m in body["members"]:
        assert m["url"] == cluster.url(m["id"])
        assert m["match"] > 0
        assert m["reachable"]
    stale = cluster.http.get(cluster.url(follower) + MEMBERS, params={"stale": "1"}).json()
    assert {m["match"] for m in stale["members"]} == {None}
    assert cluster.metric(leader, "ringleader_control_members", {"role": "voter"}) == 3


@pytest.mark.parametrize(
    ("method", "path", "authorized", "status"),
    [("POST", MEMBERS, False, 401), ("DELETE", MEMBERS + "/3", False, 401),
     ("POST", MEMBERS, True, 413)],
)  # fmt: skip
def test_writes_are_refused_before_the_body_is_read(
    cluster: ControlCluster, method: str, path: str, authorized: bool, status: int
) -> None:
    auth = f"authorization: Bearer {cluster.token}\r\n" if authorized else ""
    head = (f"{method} {path} HTTP/1.1\r\nhost: {LOOPBACK}\r\n{auth}"
            f"content-length: {100 << 20}\r\n\r\n")  # fmt: skip
    with socket.create_connection((LOOPBACK, cluster.nodes[1].port), timeout=5) as sock:
        # A few bytes of the promised 100 MB: an answer proves none of the rest was awaited.
        sock.sendall(head.encode() + b'{"id": ')
        answer = sock.recv(65536)
    assert answer.startswith(f"HTTP/1.1 {status} ".encode()), answer[:200]
    assert roles(listing(cluster, 1)) == {1: "voter", 2: "voter", 3: "voter"}


@pytest.mark.parametrize(
    "body",
    [{}, {"id": 0, "url": "http://127.0.0.1:1"}, {"id": "5", "url": "http://127.0.0.1:1"},
     {"id": 5, "url": "ftp://x"}, {"id": 5}],
)  # fmt: skip
def test_bad_add_requests_get_a_400(cluster: ControlCluster, body: dict[str, Any]) -> None:
    r = cluster.write(1, "POST", MEMBERS, body)
    assert r.status_code == 400, r.text
    assert r.json()["error"] == "bad_member"


def test_a_bad_id_to_remove_gets_a_400(cluster: ControlCluster) -> None:
    assert cluster.write(1, "DELETE", MEMBERS + "/zero").status_code == 400


def test_a_learner_that_never_catches_up_stays_a_learner_and_quorum_is_unchanged(
    cluster: ControlCluster,
) -> None:
    url = f"http://{LOOPBACK}:{free_port()}"  # nothing listens there
    request_id = uuid.uuid4().hex
    first = cluster.write(2, "POST", MEMBERS, {"id": 9, "url": url}, request_id=request_id)
    assert first.status_code == 200, first.text
    # A retry (same request id) of an add already in effect succeeds without a change.
    again = cluster.write(3, "POST", MEMBERS, {"id": 9, "url": url}, request_id=request_id)
    assert again.status_code == 200, again.text
    assert again.json()["index"] == first.json()["index"]
    body = listing(cluster, 1)
    learner = next(m for m in body["members"] if m["id"] == 9)
    assert learner["role"] == "learner"
    assert not learner["reachable"]
    # Three voters still commit alone.
    cluster.write_acked("POST", "/v1/pools", {"pool": f"p{uuid.uuid4().hex[:6]}"})
    leader = cluster.wait_leader()
    # A leader elected meanwhile may apply the add a moment after it is confirmed.
    wait_until(lambda: cluster.metric(leader, "ringleader_control_members", {"role": "learner"})
               == 1, 5, "the leader to count the learner")  # fmt: skip

    removed = cluster.write(1, "DELETE", MEMBERS + "/9")
    assert removed.status_code == 200, removed.text
    assert cluster.write(2, "DELETE", MEMBERS + "/9").status_code == 200  # idempotent
    back = cluster.write(1, "POST", MEMBERS, {"id": 9, "url": url})
    assert back.status_code == 409
    assert "can never rejoin" in back.json()["message"]
    assert listing(cluster, 1)["removed"] == [9]


def test_removing_the_leader_hands_leadership_over_and_the_node_stops(
    cluster: ControlCluster,
) -> None:
    leader = cluster.wait_leader()
    r = cluster.write(leader, "DELETE", f"{MEMBERS}/{leader}", timeout=20)
    assert r.status_code == 200, r.text
    assert leader not in r.json()["configuration"]["voters"]
    process = cluster.nodes[leader].process
    assert process is not None
    assert process.popen is not None
    assert process.popen.wait(30) == 1
    assert "was removed from the cluster" in process.log_tail()
    others = [i for i in cluster.nodes if i != leader]
    body = listing(cluster, others[0])
    assert set(roles(body)) == set(others)
    assert body["leader"] in others
    # Two voters now: both are needed, and both are there.
    cluster.write_acked("POST", "/v1/pools", {"pool": f"p{uuid.uuid4().hex[:6]}"},
                        prefer=others)  # fmt: skip
    with pytest.raises(httpx.HTTPError):
        cluster.http.get(cluster.url(leader) + MEMBERS, timeout=1)
    wait_until(lambda: not process.alive(), 5, "the removed node to exit")
