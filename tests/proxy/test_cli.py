"""`ringleader proxy` as an operator runs it: config files, flags, and one-line errors."""

from __future__ import annotations

import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.servers import (
    LOOPBACK,
    ProcessGroup,
    Proxy,
    free_port,
    memcached_url,
    ringleader_argv,
)


@pytest.fixture
def busy_port() -> Iterator[int]:
    with socket.socket() as sock:
        sock.bind((LOOPBACK, 0))
        sock.listen()
        yield int(sock.getsockname()[1])


def run_proxy(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*ringleader_argv(), "proxy", *args], capture_output=True, text=True, timeout=30
    )


def assert_one_line_error(result: subprocess.CompletedProcess[str], says: str) -> None:
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, f"expected one line on stderr, got:\n{result.stderr}"
    assert says in lines[0]
    assert lines[0].startswith("ringleader")
    assert "error: " in lines[0]


BACKEND = "memcached://127.0.0.1:1"


def test_broken_toml(tmp_path: Path) -> None:
    (tmp_path / "p.toml").write_text("backend = [\n")
    assert_one_line_error(run_proxy("--config", str(tmp_path / "p.toml")), "not valid TOML")


def test_unknown_key_in_the_file(tmp_path: Path) -> None:
    (tmp_path / "p.toml").write_text(f'backend = "{BACKEND}"\nlisten_port = 1\n')
    result = run_proxy("--config", str(tmp_path / "p.toml"))
    assert_one_line_error(result, "unknown setting 'listen-port'")


def test_missing_config_file(tmp_path: Path) -> None:
    result = run_proxy("--config", str(tmp_path / "absent.toml"))
    assert_one_line_error(result, "absent.toml: No such file or directory")


def test_bad_backend_url() -> None:
    result = run_proxy("--backend", "memcached://h:1?weight=zero")
    assert_one_line_error(result, "weight must be an integer")


@pytest.mark.parametrize("listen", ["nope", "127.0.0.1", "127.0.0.1:99999"])
def test_bad_listen_address(listen: str) -> None:
    assert_one_line_error(run_proxy("--backend", BACKEND, "--listen", listen), "--listen")


@pytest.mark.parametrize("flag", ["--listen", "--admin"])
def test_port_already_in_use(busy_port: int, flag: str) -> None:
    other = "--admin" if flag == "--listen" else "--listen"
    result = run_proxy("--backend", BACKEND, flag, f"{LOOPBACK}:{busy_port}",
                       other, f"{LOOPBACK}:{free_port()}")  # fmt: skip
    assert_one_line_error(result, f"{flag} {LOOPBACK}:{busy_port}: cannot listen")
    assert "in use" in result.stderr


def test_backend_with_control() -> None:
    result = run_proxy("--backend", BACKEND, "--control", "http://127.0.0.1:1")
    assert_one_line_error(result, "--backend and --control are exclusive")


def test_no_backends_at_all() -> None:
    assert_one_line_error(run_proxy(), "no backends")


def test_unknown_flag() -> None:
    assert_one_line_error(run_proxy("--backend", BACKEND, "--colour", "red"), "--colour")


def test_flag_with_a_bad_value() -> None:
    assert_one_line_error(run_proxy("--backend", BACKEND, "--workers", "many"), "--workers")


def _serves(proxy: Proxy) -> httpx.Response:
    return httpx.put(f"{proxy.url}/v1/kv/k", content=b"v" * 1500, timeout=5)


def test_config_file_alone_configures_the_proxy(procs: ProcessGroup, tmp_path: Path) -> None:
    mc = procs.memcached()
    listen, admin = free_port(), free_port()
    (tmp_path / "p.toml").write_text(
        f'listen = "{LOOPBACK}:{listen}"\nadmin = "{LOOPBACK}:{admin}"\n'
        f'backend = ["{memcached_url(mc, name="from-file")}"]\nmax-value-bytes = 1000\n'
    )
    proc = procs.ringleader(["proxy", "--config", str(tmp_path / "p.toml")], listen, "proxy")
    proxy = Proxy(proc, f"http://{LOOPBACK}:{listen}", f"http://{LOOPBACK}:{admin}")
    proxy.wait_ready()
    response = _serves(proxy)
    assert response.status_code == 413  # the file's 1000-byte limit applies
    ok = httpx.put(f"{proxy.url}/v1/kv/k", content=b"v", timeout=5)
    assert (ok.status_code, ok.headers["x-ringleader-backend"]) == (204, "from-file")


def test_flags_override_the_config_file(procs: ProcessGroup, tmp_path: Path) -> None:
    mc = procs.memcached()
    (tmp_path / "p.toml").write_text(
        f'backend = ["{memcached_url(mc)}"]\nmax-value-bytes = 1000\nhash = "md5"\n'
    )
    proxy = procs.proxy([], "--config", str(tmp_path / "p.toml"), "--max-value-bytes", "2000")
    assert _serves(proxy).status_code == 204  # 1500 bytes: over the file's, under the flag's
    assert httpx.get(f"{proxy.admin_url}/status").json()["hash"] == "md5"  # kept from the file
