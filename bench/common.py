"""Shared benchmark plumbing: wrk runs and result tables."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys

_RPS = re.compile(r"Requests/sec:\s+([\d.]+)")
_LATENCY = re.compile(r"^\s+50%\s+([\d.]+)(us|ms|s)$", re.MULTILINE)
_UNIT = {"us": 1e-6, "ms": 1e-3, "s": 1.0}


def require(binary: str) -> str:
    path = shutil.which(binary)
    if path is None:
        sys.exit(f"bench: {binary} is not installed (apt-get install -y {binary})")
    return path


def wrk(url: str, seconds: int, connections: int = 32, threads: int = 1) -> dict[str, float]:
    """Requests/s and median latency of a wrk run against `url`."""
    out = subprocess.run(
        [require("wrk"), f"-t{threads}", f"-c{connections}", f"-d{seconds}s", "--latency", url],
        check=True, capture_output=True, text=True,
    ).stdout  # fmt: skip
    if "Non-2xx" in out:
        sys.exit(f"bench: non-2xx responses from {url}:\n{out}")
    rps = _RPS.search(out)
    p50 = _LATENCY.search(out)
    if rps is None or p50 is None:
        sys.exit(f"bench: cannot parse wrk output:\n{out}")
    return {"rps": float(rps.group(1)), "p50_s": float(p50.group(1)) * _UNIT[p50.group(2)]}


def table(rows: list[tuple[str, ...]], header: tuple[str, ...]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)
