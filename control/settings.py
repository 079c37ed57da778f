"""`ringleader control` settings, from flags and an optional TOML file with the same keys.

Precedence: built-in defaults < `--config FILE.toml` < command-line flags.
"""

from __future__ import annotations

from control.detector import DetectorSettings
from control.node import DISK_STALL_TIMEOUT
from control.raft.types import NodeId
from control.transport import PeerAddress
from ringleader.address import parse_address
from ringleader.settings import ConfigError, Setting, Table, above_zero

# The failure detector's defaults live with it; the table only shows and checks them.
_DETECTOR = DetectorSettings()


def parse_peers(flag: str, text: str) -> dict[NodeId, str]:
    peers: dict[NodeId, str] = {}
    for item in text.split(","):
        ident, sep, url = item.strip().partition("=")
        if not sep or not ident.isdigit() or int(ident) <= 0:
            raise ConfigError(f"{flag}: expected ID=URL with a positive ID, got {item!r}")
        if not url.startswith(("http://", "https://")):
            raise ConfigError(f"{flag}: {ident}: expected an http:// URL, got {url!r}")
        try:
            PeerAddress.parse(url)
        except ValueError as exc:
            raise ConfigError(f"{flag}: {ident}: {exc}") from None
        if int(ident) in peers:
            raise ConfigError(f"{flag}: node {ident} is listed twice")
        peers[int(ident)] = url.rstrip("/")
    return peers


def parse_join(flag: str, text: str) -> list[str]:
    urls = [u.strip().rstrip("/") for u in text.split(",") if u.strip()]
    for url in urls:
        if not url.startswith(("http://", "https://")):
            raise ConfigError(f"{flag}: expected http:// URLs, got {url!r}")
    if not urls:
        raise ConfigError(f"{flag}: no URL given")
    return urls


def _fraction(flag: str, number: float) -> None:
    if not 0 <= number < 1:
        raise ConfigError(f"{flag}: expected a fraction in [0, 1)")


def _not_negative(flag: str, number: float) -> None:
    if number < 0:
        raise ConfigError(f"{flag}: must be >= 0")


_DETECT = "failure detector"

SETTINGS = Table((
    Setting("id", "int", None, "this node's id (in --peers)",
            metavar="ID", required=True, check=above_zero),
    Setting("listen", "str", None, "this node's address for peers, proxies and operators",
            metavar="HOST:PORT", required=True, parse=parse_address),
    Setting("peers", "str", None,
            "every node of a new cluster, this one included (or --join)",
            metavar="ID=URL,...", parse=parse_peers),
    Setting("join", "str", None,
            "join a running cluster through these members instead of --peers: learn its "
            "configuration, then wait for `ringleader member add ID=URL`",
            metavar="URL[,URL...]", parse=parse_join),
    Setting("data-dir", "path", None,
            "Raft log and snapshots; must exist (empty for a new node)",
            metavar="DIR", required=True),
    Setting("token-file", "path", None, "cluster token",
            metavar="FILE", default_text="$RINGLEADER_TOKEN"),
    Setting("disk-stall-timeout", "float", DISK_STALL_TIMEOUT,
            "a storage write in flight this long makes the node step down as leader and "
            "refuse votes, reads and watches until it completes",
            metavar="SECONDS", check=above_zero),
    Setting("detector-quorum", "float", _DETECTOR.quorum_fraction,
            "more than this share of recently reporting proxies must agree",
            _DETECT, metavar="FRACTION", check=_fraction),
    Setting("report-ttl", "float", _DETECTOR.report_ttl, "a proxy's reports count for this long",
            _DETECT, metavar="SECONDS", check=_not_negative),
    Setting("hysteresis", "float", _DETECTOR.hysteresis, "seen up this long before it rejoins",
            _DETECT, metavar="SECONDS", check=_not_negative),
    Setting("max-eject-fraction", "float", _DETECTOR.max_eject_fraction,
            "most of a pool down at once", _DETECT, metavar="FRACTION", check=_fraction),
    Setting("rejoin-policy", "str", _DETECTOR.rejoin_policy, "flush a backend before it rejoins",
            _DETECT, choices=("flush", "none")),
))  # fmt: skip
