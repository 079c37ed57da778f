"""`ringleader control` settings: built-in defaults < `--config FILE.toml` < flags."""

from __future__ import annotations

from pathlib import Path

import pytest

from control import service
from control.detector import DetectorSettings
from ringleader.cli import build_parser
from ringleader.settings import ConfigError

PEERS = "1=http://127.0.0.1:7001,2=http://127.0.0.1:7002"


def config_from(argv: list[str]) -> service.ControlConfig:
    return service.build_config(build_parser().parse_args(["control", *argv]))


@pytest.fixture(autouse=True)
def token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RINGLEADER_TOKEN", "t0ken")


def test_flags_alone_with_the_detector_defaults() -> None:
    config = config_from(["--id", "2", "--listen", "127.0.0.1:7002", "--peers", PEERS,
                          "--data-dir", "/d"])  # fmt: skip
    assert (config.node_id, str(config.listen), config.data_dir) == (2, "127.0.0.1:7002", "/d")
    assert config.peers == {1: "http://127.0.0.1:7001", 2: "http://127.0.0.1:7002"}
    assert config.detector == DetectorSettings()
    assert config.token == "t0ken"


def test_the_file_takes_the_flag_names_and_flags_win(tmp_path: Path) -> None:
    path = tmp_path / "control.toml"
    path.write_text(
        f'id = 1\nlisten = "127.0.0.1:7001"\npeers = "{PEERS}"\ndata_dir = "/d"\n'
        'report-ttl = 8\nrejoin-policy = "none"\nhysteresis = 2\n'
    )
    config = config_from(["--config", str(path), "--id", "2", "--hysteresis", "3"])
    assert (config.node_id, config.data_dir) == (2, "/d")
    assert (config.detector.report_ttl, config.detector.hysteresis) == (8.0, 3.0)
    assert config.detector.rejoin_policy == "none"


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ('id = 1\ncolour = "red"\n', "unknown setting 'colour'"),
        (f'listen = "127.0.0.1:7001"\npeers = "{PEERS}"\ndata-dir = "/d"\n', "--id: required"),
        (f'id = 1\nlisten = "h:1"\npeers = "{PEERS}"\ndata-dir = "/d"\ndetector-quorum = 1\n',
         "--detector-quorum: expected a fraction in [0, 1)"),
        (f'id = 3\nlisten = "h:1"\npeers = "{PEERS}"\ndata-dir = "/d"\n', "--id 3 is not in"),
    ],
)  # fmt: skip
def test_bad_file_settings_raise_one_line_naming_them(tmp_path: Path, text: str, says: str) -> None:
    path = tmp_path / "control.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as caught:
        config_from(["--config", str(path)])
    assert says in str(caught.value)
    assert "\n" not in str(caught.value)
