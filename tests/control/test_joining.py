"""`ringleader control` start-up flags for joining, and the empty-data-directory test."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from control import service
from control.joining import check_join, is_empty
from control.raft.diskstore import DiskStorage
from control.raft.types import Entry, HardState
from ringleader.settings import ConfigError
from tests.support.servers import LOOPBACK, free_port


def parse(tmp_path: Path, *flags: str) -> service.ControlConfig:
    token = tmp_path / "token"
    token.write_text("t" * 32 + "\n")
    parser = argparse.ArgumentParser()
    service.add_arguments(parser)
    args = parser.parse_args(["--id", "4", "--listen", "127.0.0.1:7004", "--data-dir",
                              str(tmp_path), "--token-file", str(token), *flags])  # fmt: skip
    return service.build_config(args)


def test_join_takes_urls_instead_of_peers(tmp_path: Path) -> None:
    config = parse(tmp_path, "--join", "http://127.0.0.1:7001/, http://127.0.0.1:7002")
    assert config.join == ("http://127.0.0.1:7001", "http://127.0.0.1:7002")
    assert config.peers == {}


@pytest.mark.parametrize(
    ("flags", "message"),
    [((), "either --peers"),
     (("--peers", "4=http://127.0.0.1:7004", "--join", "http://127.0.0.1:7001"), "either"),
     (("--join", "127.0.0.1:7001"), "expected http://"),
     (("--join", " , "), "no URL")],
)  # fmt: skip
def test_bad_join_flags_are_one_line_errors(
    tmp_path: Path, flags: tuple[str, ...], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        parse(tmp_path, *flags)


def test_a_data_directory_is_empty_until_anything_is_stored(tmp_path: Path) -> None:
    with DiskStorage(str(tmp_path)) as storage:
        assert is_empty(storage)
        storage.save_hard_state(HardState(1, None, 0))
        assert not is_empty(storage)
    other = tmp_path / "other"
    other.mkdir()
    with DiskStorage(str(other)) as storage:
        storage.append([Entry(1, 1)])
        assert not is_empty(storage)


def test_joining_with_an_empty_directory_needs_an_answer(tmp_path: Path) -> None:
    nobody = f"http://{LOOPBACK}:{free_port()}"
    with DiskStorage(str(tmp_path)) as storage, pytest.raises(ConfigError, match="no member"):
        check_join(4, [nobody], storage)
