"""`ringleader proxy` settings: built-in defaults < `--config FILE.toml` < flags."""

from __future__ import annotations

from pathlib import Path

import pytest

from proxy import cli as proxy_cli
from proxy.config import build, load_file
from ringleader.address import Address as ConfigAddress
from ringleader.address import parse_address
from ringleader.cli import build_parser
from ringleader.settings import ConfigError


def config_from(argv: list[str]) -> object:
    args = build_parser().parse_args(["proxy", *argv])
    return build(proxy_cli.settings_from(args))


def write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "proxy.toml"
    path.write_text(text)
    return str(path)


def test_defaults_with_one_backend() -> None:
    config = build({"backend": "memcached://10.0.0.1:11211"})
    assert str(config.listen) == "127.0.0.1:8080"
    assert str(config.admin) == "127.0.0.1:8081"
    assert [b.name for b in config.backends] == ["10.0.0.1"]
    assert (config.hash, config.workers, config.max_value_bytes) == ("fnv1a_64", 1, 1024 * 1024)


def test_file_takes_the_flag_names_with_dashes_or_underscores(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
listen = "127.0.0.1:9000"
backend = ["memcached://10.0.0.1:11211?weight=2", "redis://10.0.0.2:6380/3?name=r"]
hash = "md5"
workers = 3
max_value_bytes = 1000
request-timeout = 0.25
""",
    )
    config = build(load_file(path))
    assert config.listen == ConfigAddress("127.0.0.1", 9000)
    assert [(b.name, b.weight, b.db) for b in config.backends] == [
        ("10.0.0.1", 2, 0), ("r", 1, 3)]  # fmt: skip
    assert (config.hash, config.workers, config.max_value_bytes) == ("md5", 3, 1000)
    assert config.client.request_timeout == 0.25


def test_flags_override_the_file(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
backend = ["memcached://10.0.0.1:11211"]
max-value-bytes = 1000
workers = 3
hash = "md5"
""",
    )
    config = config_from(["--config", path, "--max-value-bytes", "2000", "--hash", "fnv1a_64"])
    assert config.max_value_bytes == 2000  # type: ignore[attr-defined]
    assert config.hash == "fnv1a_64"  # type: ignore[attr-defined]
    assert config.workers == 3  # type: ignore[attr-defined]  # from the file
    flagged = config_from(["--config", path, "--backend", "memcached://10.9.9.9:1"])
    assert [b.address for b in flagged.backends] == ["10.9.9.9:1"]  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("backend = [\n", "not valid TOML"),
        ('backend = "memcached://h:1"\ncolour = "red"\n', "unknown setting 'colour'"),
        ("backend = 5\n", "expected a string or a list of strings"),
        ('backend = "http://h:1"\n', "scheme must be memcached:// or redis://"),
        ('backend = "memcached://h:1"\nworkers = 0\n', "--workers: must be above zero"),
        ('backend = "memcached://h:1"\nworkers = "many"\n', "--workers: expected a whole number"),
        ('backend = "memcached://h:1"\nhash = "crc32"\n', "--hash: expected one of"),
        ('backend = "memcached://h:1"\nlisten = "8080"\n', "--listen: expected HOST:PORT"),
        ('backend = "memcached://h:1"\norigin = "ftp://x"\n', "--origin: expected an http"),
    ],
)
def test_bad_file_settings_raise_one_line_naming_them(tmp_path: Path, text: str, says: str) -> None:
    with pytest.raises(ConfigError) as caught:
        build(load_file(write(tmp_path, text)))
    assert says in str(caught.value)
    assert "\n" not in str(caught.value)


def test_missing_file_names_it(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"--config .*nope\.toml: No such file"):
        load_file(str(tmp_path / "nope.toml"))


@pytest.mark.parametrize(
    ("settings", "says"),
    [
        ({}, "no backends"),
        ({"backend": "memcached://h:1", "control": ["http://c:1"]}, "exclusive"),
        ({"backend": ["memcached://a:1?name=x", "memcached://b:1?name=x"]}, "named 'x'"),
        ({"backend": "memcached://h:1", "connect-timeout": -1}, "--connect-timeout"),
    ],
)
def test_inconsistent_settings_are_refused(settings: dict[str, object], says: str) -> None:
    with pytest.raises(ConfigError, match=says):
        build(settings)


def test_control_urls_split_on_commas(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RINGLEADER_TOKEN", "t0ken")
    config = build({"control": ["http://a:1,http://b:1", "http://c:1"]})
    assert config.control == ("http://a:1", "http://b:1", "http://c:1")
    assert config.token == "t0ken"


def test_control_without_a_token_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RINGLEADER_TOKEN", raising=False)
    with pytest.raises(ConfigError, match="needs the cluster token"):
        build({"control": ["http://a:1"]})


@pytest.mark.parametrize(
    ("text", "address"),
    [
        ("0.0.0.0:80", ConfigAddress("0.0.0.0", 80)),
        ("[::1]:8080", ConfigAddress("::1", 8080)),
        ("localhost:0", ConfigAddress("localhost", 0)),
    ],
)
def test_parse_address_accepts_host_port(text: str, address: ConfigAddress) -> None:
    assert parse_address("--listen", text) == address


@pytest.mark.parametrize("text", ["8080", ":8080", "host:", "host:http", "host:65536", "host:-1"])
def test_parse_address_refuses_malformed(text: str) -> None:
    with pytest.raises(ConfigError, match="--listen: expected HOST:PORT"):
        parse_address("--listen", text)


def test_a_fractional_value_for_an_integer_setting_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="--workers"):
        build(load_file(write(tmp_path, 'backend = "memcached://h:1"\nworkers = 1.5\n')))


def test_hash_tag_from_flag_and_file(tmp_path: Path) -> None:
    assert build({"backend": "memcached://h:1"}).hash_tag is None
    config = config_from(["--backend", "memcached://h:1", "--hash-tag", "{}"])
    assert config.hash_tag == b"{}"  # type: ignore[attr-defined]
    path = write(tmp_path, 'backend = "memcached://h:1"\nhash-tag = "$$"\n')
    assert config_from(["--config", path]).hash_tag == b"$$"  # type: ignore[attr-defined]


@pytest.mark.parametrize("tag", ["{", "{}}", "", "«»", 12])
def test_malformed_hash_tag_is_refused_in_one_line(tag: object) -> None:
    with pytest.raises(ConfigError, match=r"^--hash-tag: ") as exc:
        build({"backend": "memcached://h:1", "hash-tag": tag})
    assert "\n" not in str(exc.value)
