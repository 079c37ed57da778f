"""The README's "A five-minute tour", followed literally with real processes.

The commands run here are the fenced shell lines of that README section, with the addresses,
token path and `ringleader` path that `ringleader up` printed put in for the README's
defaults, so the tour, the banner and this test cannot drift apart.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.support.servers import free_port, port_open, ringleader_argv, wait_until

README = Path(__file__).resolve().parents[2] / "README.md"
TOUR_HEADING = "## A five-minute tour"

# What the README shows, as `ringleader up` prints it with its defaults.
README_CONTROL = "http://127.0.0.1:7000,http://127.0.0.1:7001,http://127.0.0.1:7002"
README_TOKEN = "/tmp/ringleader-up-XXXX/token"
README_PROXY = "http://127.0.0.1:8080"
README_ADMIN = "http://127.0.0.1:8081"
README_RINGLEADER = ".venv/bin/ringleader"

PROCESS_LINE = re.compile(r"^  (control node|cache server|proxy) +(\S+)  (\S+), pid (\d+)$")
LISTING_LINE = re.compile(r"^  (proxy admin|cluster token) +(\S+)")
DEATH_LINE = re.compile(r"^(\S+) \(.*\) .*; start it again with: (.+)$")


def tour_commands() -> list[str]:
    """The fenced shell lines of the tour section, without their trailing comments."""
    text = README.read_text()
    section = text[text.index(TOUR_HEADING) :]
    section = section[: section.find("\n## ", len(TOUR_HEADING))]
    commands: list[str] = []
    for block in re.findall(r"^```sh\n(.*?)^```", section, re.M | re.S):
        for line in block.splitlines():
            command = re.sub(r"\s+# .*$", "", line).strip()
            if command:
                commands.append(command)
    return commands


@dataclass
class Up:
    """A running `ringleader up`, its banner, and every line it printed since."""

    process: subprocess.Popen[str]
    lines: list[str] = field(default_factory=list)
    banner: list[str] = field(default_factory=list)
    pids: dict[str, int] = field(default_factory=dict)  # process name -> pid
    urls: dict[str, str] = field(default_factory=dict)  # process name -> url
    listed: dict[str, str] = field(default_factory=dict)  # "proxy admin", "cluster token"
    tried: list[str] = field(default_factory=list)  # the banner's "try" commands

    def read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line.rstrip("\n"))

    def wait_banner(self, timeout: float) -> None:
        wait_until(lambda: "Ctrl-C stops everything." in self.lines or self.process.poll()
                   is not None, timeout, "ringleader up's banner")  # fmt: skip
        assert "Ctrl-C stops everything." in self.lines, "\n".join(self.lines)
        self.banner = self.lines[: self.lines.index("Ctrl-C stops everything.") + 1]
        for line in self.banner:
            if match := PROCESS_LINE.match(line):
                self.urls[match[3]] = match[2]
                self.pids[match[3]] = int(match[4])
            elif match := LISTING_LINE.match(line):
                self.listed[match[1]] = match[2]
        start = self.banner.index("try, in another shell:") + 1
        self.tried = [re.sub(r"\s+# .*$", "", line).strip() for line in self.banner[start:-2]]

    def printed(self, prefix: str) -> str:
        found = [c for c in self.tried if c.startswith(prefix)]
        assert len(found) == 1, (prefix, self.tried)
        return found[0]

    def restart_command(self, name: str) -> str | None:
        for line in self.lines[len(self.banner) :]:
            match = DEATH_LINE.match(line)
            if match and match[1] == name:
                return match[2]
        return None


class Tour:
    """Runs README commands, as printed by `up`, in a shell like the user's second one."""

    def __init__(self, up: Up) -> None:
        self.up = up
        status = [c for c in up.tried if c.endswith(" status")]
        assert len(status) == 1, up.tried
        self.ringleader = status[0].removesuffix(" status")
        self.substitutions = {
            README_CONTROL: up.printed("export RINGLEADER_CONTROL=").split("=", 1)[1],
            README_TOKEN: up.listed["cluster token"],
            README_PROXY: up.urls["proxy"],
            README_ADMIN: up.listed["proxy admin"].removesuffix("/status"),
        }
        self.commands = [self.fill(c) for c in tour_commands()]
        self.exports = [c for c in self.commands if c.startswith("export ")]

    def fill(self, command: str) -> str:
        for readme, actual in self.substitutions.items():
            command = command.replace(readme, actual)
        if command.startswith(README_RINGLEADER + " "):
            command = self.ringleader + command[len(README_RINGLEADER) :]
        return command

    def readme(self, prefix: str, **placeholders: str | int) -> str:
        """The tour's one command that starts with `prefix` (in README terms); steps may
        repeat it."""
        prefix = self.fill(prefix)
        found = sorted({c for c in self.commands if c.startswith(prefix)})
        assert len(found) == 1, (prefix, found)
        command = found[0]
        for placeholder, value in placeholders.items():
            command = command.replace(placeholder, str(value))
        return command

    def run(self, command: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        script = "\n".join([*self.exports, command])
        done = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=30)
        if check:
            assert done.returncode == 0, (command, done.stdout, done.stderr)
        return done

    def events(self, kind: str, backend: str) -> bool:
        out = self.run(self.readme(".venv/bin/ringleader events")).stdout
        return any(line.split()[3:5] == [kind, backend] for line in out.splitlines()[1:])


def memcached_command(port: int, line: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
        s.sendall(line)
        reply = b""
        while not reply.endswith((b"END\r\n", b"STORED\r\n")):
            chunk = s.recv(4096)
            assert chunk, reply
            reply += chunk
        return reply


def alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0] != "Z"
    except (OSError, IndexError):
        return False


@pytest.fixture
def by_hand() -> Iterator[list[subprocess.Popen[bytes]]]:
    """Processes the test starts as the user would, in another shell; killed by PID."""
    started: list[subprocess.Popen[bytes]] = []
    try:
        yield started
    finally:
        for process in started:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()


def test_the_readme_tour(tmp_path: Path, by_hand: list[subprocess.Popen[bytes]]) -> None:
    listen, admin, control = free_port(), free_port(), free_port()
    argv = [*ringleader_argv(), "up", "--listen", f"127.0.0.1:{listen}",
            "--admin", f"127.0.0.1:{admin}", "--control-port", str(control),
            "--data-dir", str(tmp_path / "up")]  # fmt: skip
    process = subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True
    )
    up = Up(process)
    threading.Thread(target=up.read, daemon=True).start()

    def start_by_hand(command: str, name: str) -> subprocess.Popen[bytes]:
        with open(tmp_path / f"{name}.by-hand.log", "ab") as log:
            started = subprocess.Popen(
                ["bash", "-c", f"exec {command}"],
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip
        by_hand.append(started)
        return started

    try:
        up.wait_banner(60)
        tour = Tour(up)
        # Every command `up` prints is one the README shows, and so one this test can run.
        assert set(up.tried) <= set(tour.commands), set(up.tried) - set(tour.commands)
        assert os.path.isabs(tour.ringleader)
        started_by_up = set(up.pids.values())

        # Step 1: a PUT, then a GET, through the proxy; the status commands answer.
        put = tour.run(tour.readme("curl -X PUT --data-binary hello") + " -s -w '%{http_code}'")
        assert put.stdout == "204"
        get = tour.run(tour.readme("curl -i http://127.0.0.1:8080/v1/kv/greeting"))
        assert get.stdout.splitlines()[0].endswith(" 200 OK"), get.stdout
        assert get.stdout.splitlines()[-2:] == ["", "hello"], get.stdout
        assert "x-ringleader-epoch" in get.stdout.lower()
        for command in ("curl -s http://127.0.0.1:8081/status", ".venv/bin/ringleader status",
                        ".venv/bin/ringleader backend list",
                        ".venv/bin/ringleader ring"):  # fmt: skip
            tour.run(tour.readme(command))

        # Step 2: kill -9 a memcached; `ringleader events` shows mark_down within 2 s.
        victim = next(name for name in up.pids if name.startswith(("memcached-", "redis-")))
        backend = up.urls[victim].split("://", 1)[1]  # its name: host:port
        tour.run(tour.readme("kill -9 PID", PID=up.pids[victim]))
        wait_until(lambda: tour.events("mark_down", backend), 2.0, f"mark_down of {victim}")
        assert up.process.poll() is None, "\n".join(up.lines)

        # Step 2, continued: the printed command starts it again; it is flushed, then marked up.
        wait_until(lambda: up.restart_command(victim) is not None, 5, f"{victim}'s restart line")
        restart = up.restart_command(victim)
        assert restart is not None
        assert os.path.isabs(restart.split(" ")[0])
        start_by_hand(restart, victim)
        port = int(backend.rsplit(":", 1)[1])
        wait_until(lambda: port_open(port), 10, f"{victim} listening again")
        if victim.startswith("memcached-"):
            # Written before the rejoin, so only the rejoin's flush can remove it.
            assert memcached_command(port, b"set stale 0 0 2\r\nno\r\n") == b"STORED\r\n"
        wait_until(lambda: tour.events("mark_up", backend), 15, f"mark_up of {victim}")
        if victim.startswith("memcached-"):
            assert memcached_command(port, b"get stale\r\n") == b"END\r\n"

        # Step 3: kill -9 the control leader, found with the printed status command.
        status = tour.run(tour.readme(".venv/bin/ringleader status")).stdout
        rows = [row.split() for row in status.splitlines()[1:]]
        leader = next(row[0] for row in rows if row[2] == "leader")
        tour.run(tour.readme("kill -9 PID", PID=up.pids[f"control-{leader}"]))
        other = next(n for n in up.pids if n.startswith(("memcached-", "redis-")) and n != victim)
        drain = tour.readme(".venv/bin/ringleader backend drain",
                            PORT=up.urls[other].rsplit(":", 1)[1])  # fmt: skip
        # The CLI retries until a new leader answers; the poll covers a retry budget running out.
        wait_until(lambda: tour.run(drain, check=False).returncode == 0, 20, "a drain to commit")
        tour.run(tour.readme(".venv/bin/ringleader backend activate",
                             PORT=up.urls[other].rsplit(":", 1)[1]))  # fmt: skip
        put = tour.run(tour.readme("curl -X PUT --data-binary again") + " -s -w '%{http_code}'")
        assert put.stdout == "204"
        # Step 3, continued: the old leader, started again by hand, rejoins.
        wait_until(lambda: up.restart_command(f"control-{leader}") is not None, 5,
                   "the old leader's restart line")  # fmt: skip
        restart = up.restart_command(f"control-{leader}")
        assert restart is not None
        start_by_hand(restart, f"control-{leader}")

        def rejoined() -> bool:
            rows = tour.run(tour.readme(".venv/bin/ringleader status")).stdout.splitlines()[1:]
            return all(row.split()[2] in ("leader", "follower") for row in rows)

        wait_until(rejoined, 15, f"control-{leader} to rejoin")
        assert up.process.poll() is None, "\n".join(up.lines)

        # Step 4: Ctrl-C stops every process `up` started, and only those.
        up.process.send_signal(signal.SIGINT)
        assert up.process.wait(30) == 0, "\n".join(up.lines)
        wait_until(lambda: not any(alive(pid) for pid in started_by_up), 15,
                   "every process ringleader up started to exit")  # fmt: skip
        assert all(p.poll() is None for p in by_hand), "up stopped processes it did not start"
    finally:
        if up.process.poll() is None:
            os.killpg(up.process.pid, signal.SIGKILL)
            up.process.wait()
