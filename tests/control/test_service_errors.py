"""`ringleader control` refuses bad input with one line and a non-zero exit, never a
traceback: flags, token, --peers, data directory (missing, not a directory, corrupt,
locked), and a node with the wrong token cannot join its cluster."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

import httpx
import pytest

from control.raft.records import scan_records
from tests.support.control_cluster import TOKEN, ControlCluster, backend_url
from tests.support.servers import LOOPBACK, ProcessGroup, free_port, ringleader_argv, wait_until

EXIT_DEADLINE = 20.0


def run_control(
    args: list[str], env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if k != "RINGLEADER_TOKEN"}
    return subprocess.run(
        [*ringleader_argv(), "control", *args], capture_output=True, text=True,
        timeout=EXIT_DEADLINE, env={**base, **(env or {})},
    )  # fmt: skip


def assert_one_line_error(result: subprocess.CompletedProcess[str], *needles: str) -> str:
    assert result.returncode != 0, result
    assert "Traceback" not in result.stderr
    assert "Traceback" not in result.stdout
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    line = lines[0]
    assert line.startswith("ringleader"), line
    for needle in needles:
        assert needle in line, line
    return line


@pytest.fixture
def token_file(tmp_path: Path) -> Path:
    path = tmp_path / "token"
    path.write_text(TOKEN + "\n")
    return path


def args_for(
    tmp_path: Path, token_file: Path | None, *, node_id: str = "1", peers: str | None = None,
    data_dir: Path | None = None, port: int | None = None,
) -> list[str]:  # fmt: skip
    port = port or free_port()
    data = data_dir if data_dir is not None else tmp_path / "data"
    if data_dir is None:
        data.mkdir(exist_ok=True)
    if peers is None:
        peers = f"1=http://{LOOPBACK}:{port}"
    argv = ["--id", node_id, "--listen", f"{LOOPBACK}:{port}", "--peers", peers,
            "--data-dir", str(data)]  # fmt: skip
    if token_file is not None:
        argv += ["--token-file", str(token_file)]
    return argv


def test_unknown_flag(tmp_path: Path, token_file: Path) -> None:
    result = run_control([*args_for(tmp_path, token_file), "--bogus"])
    assert result.returncode == 2
    assert_one_line_error(result, "--bogus")


def test_missing_required_flag(tmp_path: Path, token_file: Path) -> None:
    argv = args_for(tmp_path, token_file)
    cut = argv.index("--data-dir")
    result = run_control(argv[:cut] + argv[cut + 2 :])
    assert result.returncode == 2
    assert_one_line_error(result, "--data-dir")


def test_missing_token(tmp_path: Path) -> None:
    result = run_control(args_for(tmp_path, None))
    assert_one_line_error(result, "token")


def test_token_from_the_environment_is_enough(tmp_path: Path, procs: ProcessGroup) -> None:
    port = free_port()
    proc = procs.ringleader(
        ["control", *args_for(tmp_path, None, port=port)], port, name="control-env",
        env={**os.environ, "RINGLEADER_TOKEN": TOKEN},
    )  # fmt: skip
    proc.wait_port()

    def answers() -> bool:
        try:
            return httpx.get(f"http://{LOOPBACK}:{port}/readyz", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    wait_until(answers, 10, "the single node to elect itself")
    assert proc.terminate() == 0


@pytest.mark.parametrize("content", [None, "", "   \n"], ids=["absent", "empty", "blank"])
def test_unusable_token_file(tmp_path: Path, content: str | None) -> None:
    path = tmp_path / "token"
    if content is not None:
        path.write_text(content)
    result = run_control(args_for(tmp_path, path))
    assert_one_line_error(result, "--token-file", str(path))


@pytest.mark.parametrize(
    ("peers", "needle"),
    [
        ("1=http://127.0.0.1:1,2", "--peers"),
        ("1=http://127.0.0.1:1,x=http://127.0.0.1:2", "--peers"),
        ("1=http://127.0.0.1:1,0=http://127.0.0.1:2", "--peers"),
        ("1=ftp://127.0.0.1:1", "--peers"),
        ("1=http://127.0.0.1:1,2=http://:2", "no host"),
        ("1=http://127.0.0.1:1,2=http://127.0.0.1:port", "--peers: 2"),
        ("1=http://127.0.0.1:1,1=http://127.0.0.1:2", "twice"),
        ("2=http://127.0.0.1:1,3=http://127.0.0.1:2", "--id 1"),
        ("", "--peers"),
    ],
)
def test_bad_peers(tmp_path: Path, token_file: Path, peers: str, needle: str) -> None:
    result = run_control(args_for(tmp_path, token_file, peers=peers))
    assert result.returncode == 2
    assert_one_line_error(result, needle)


@pytest.mark.parametrize("node_id", ["0", "-1", "abc"])
def test_bad_id(tmp_path: Path, token_file: Path, node_id: str) -> None:
    result = run_control(args_for(tmp_path, token_file, node_id=node_id))
    assert_one_line_error(result, "--id")


def test_bad_listen(tmp_path: Path, token_file: Path) -> None:
    argv = args_for(tmp_path, token_file)
    argv[argv.index("--listen") + 1] = "no-port-here"
    result = run_control(argv)
    assert_one_line_error(result, "--listen")


def test_listen_port_in_use(tmp_path: Path, token_file: Path, procs: ProcessGroup) -> None:
    port = free_port()
    first = procs.ringleader(
        ["control", *args_for(tmp_path, token_file, port=port)], port, name="control-first"
    ).wait_port()
    other = tmp_path / "other"
    other.mkdir()
    result = run_control(args_for(tmp_path, token_file, port=port, data_dir=other))
    assert result.returncode == 1
    assert_one_line_error(result, str(port))
    assert first.alive()


def test_missing_data_dir(tmp_path: Path, token_file: Path) -> None:
    missing = tmp_path / "missing"
    result = run_control(args_for(tmp_path, token_file, data_dir=missing))
    assert result.returncode == 1
    assert_one_line_error(result, str(missing))
    assert not missing.exists()


def test_data_dir_is_a_file(tmp_path: Path, token_file: Path) -> None:
    path = tmp_path / "file"
    path.write_text("not a directory")
    result = run_control(args_for(tmp_path, token_file, data_dir=path))
    assert result.returncode == 1
    assert_one_line_error(result, str(path))


def test_data_dir_in_use_by_another_node(
    tmp_path: Path, token_file: Path, procs: ProcessGroup
) -> None:
    port = free_port()
    data = tmp_path / "shared"
    data.mkdir()
    first = procs.ringleader(
        ["control", *args_for(tmp_path, token_file, port=port, data_dir=data)], port,
        name="control-owner",
    ).wait_port()  # fmt: skip
    # Same peers list (a restart gone wrong), other listen port, same directory.
    argv = args_for(tmp_path, token_file, port=free_port(), data_dir=data,
                    peers=f"1=http://{LOOPBACK}:{port}")  # fmt: skip
    result = run_control(argv)
    assert result.returncode == 1
    assert_one_line_error(result, str(data))
    assert first.alive()


def _populated_data_dir(procs: ProcessGroup, tmp_path: Path, token_file: Path) -> Path:
    """A single-node cluster's data dir holding a few committed commands, cleanly stopped."""
    cluster = ControlCluster(procs, tmp_path / "single", size=1)
    try:
        cluster.start()
        for i in range(5):
            cluster.write_acked("POST", "/v1/pools/default/backends",
                                {"url": backend_url(f"b{i}", 40000 + i)})  # fmt: skip
        node = cluster.nodes[1]
        assert node.process is not None
        assert node.process.terminate() == 0
        return node.data_dir
    finally:
        cluster.close()


def test_corrupt_log_refuses_to_start(
    tmp_path: Path, token_file: Path, procs: ProcessGroup
) -> None:
    data = _populated_data_dir(procs, tmp_path, token_file)
    log = data / "raft.log"
    raw = bytearray(log.read_bytes())
    # Inside the records, not the zero reserve after them: damage there is a torn write.
    end = scan_records(bytes(raw), str(log)).end
    assert end > 200
    raw[end // 3] ^= 0xFF  # a flipped byte well before the tail
    log.write_bytes(bytes(raw))
    result = run_control(args_for(tmp_path, token_file, data_dir=data))
    assert result.returncode == 1
    assert_one_line_error(result, "corrupt")


def test_corrupt_hard_state_refuses_to_start(
    tmp_path: Path, token_file: Path, procs: ProcessGroup
) -> None:
    data = _populated_data_dir(procs, tmp_path, token_file)
    hard_state = data / "hardstate"
    raw = bytearray(hard_state.read_bytes())
    raw[-1] ^= 0xFF
    hard_state.write_bytes(bytes(raw))
    result = run_control(args_for(tmp_path, token_file, data_dir=data))
    assert result.returncode == 1
    assert_one_line_error(result, "hardstate")


def test_clean_shutdown_and_restart_keep_the_state(
    tmp_path: Path, token_file: Path, procs: ProcessGroup
) -> None:
    data = _populated_data_dir(procs, tmp_path, token_file)
    cluster = ControlCluster(procs, tmp_path / "single", size=1)
    try:
        assert cluster.nodes[1].data_dir == data
        cluster.start()
        names = cluster.backend_names(1)
        assert names == [f"b{i}" for i in range(5)]
    finally:
        cluster.close()


def test_a_node_with_the_wrong_token_cannot_join(tmp_path: Path, procs: ProcessGroup) -> None:
    cluster = ControlCluster(procs, tmp_path / "mixed", size=3)
    bad_token = tmp_path / "bad.token"
    bad_token.write_text("not-the-cluster-token\n")
    try:
        for node_id in (1, 2):
            cluster.nodes[node_id].process = procs.ringleader(
                cluster.argv(node_id), cluster.nodes[node_id].port, name=f"control-{node_id}"
            )  # fmt: skip
        argv = cluster.argv(3)
        argv[argv.index("--token-file") + 1] = str(bad_token)
        intruder = cluster.nodes[3].process = procs.ringleader(
            argv, cluster.nodes[3].port, name="control-3"
        )  # fmt: skip
        for node in cluster.nodes.values():
            assert node.process is not None
            node.process.wait_port()
        cluster.wait_leader(among=[1, 2])
        cluster.write_acked("POST", "/v1/pools/default/backends", {"url": backend_url("t")},
                            prefer=[1, 2])  # fmt: skip

        def rejected(node_id: int) -> float:
            return cluster.metric(
                node_id, "ringleader_raft_peer_rpc_rejected_total", {"reason": "token"}
            )

        # The intruder refuses the leader's heartbeats, and the leader refuses its votes.
        wait_until(lambda: rejected(3) > 0, 10, "node 3 to reject the leader's messages")
        wait_until(lambda: rejected(1) + rejected(2) > 0, 10,
                   "nodes 1 and 2 to reject node 3's vote requests")  # fmt: skip
        wait_until(lambda: "peer refused: 401" in intruder.log_path.read_text(), 10,
                   "node 3 to log that its peers refuse its token")  # fmt: skip
        # Polled, with generous timeouts: a loaded machine can make a node miss the short
        # STATUS_TIMEOUT, and that says nothing about the token.
        status: dict[str, Any] = {}

        def answered() -> bool:
            status.update(cluster.status(3, timeout=5) or {})
            return bool(status)

        wait_until(answered, 10, "node 3 to answer /v1/status")
        assert status["leader"] is None
        assert status["applied_index"] == 0
        # Term 0: node 3 never took a message from nodes 1 and 2 (any would carry their
        # term), and they never granted its pre-votes (a pre-vote won starts a real
        # election, at term 1 or more). So node 3 cannot have disturbed their elections.
        assert status["term"] == 0
        assert cluster.http.get(cluster.url(3) + "/readyz", timeout=5).status_code == 503
        assert intruder.alive()
        # Nodes 1 and 2 still elect and commit without node 3. Not "the same leader as
        # before": on a loaded machine the pair may hold an election of its own, which node
        # 3, whose every message they refuse, can have no part in.
        cluster.wait_leader(among=[1, 2])
        cluster.write_acked("POST", "/v1/pools/default/backends", {"url": backend_url("u")},
                            prefer=[1, 2])  # fmt: skip
    finally:
        cluster.close()
