"""Real clients through the cache, in front of every origin kind: Node's fetch (undici,
which rejects a response with both Content-Length and chunked framing, or two
Content-Lengths) and curl. Each fetches a chunked and a Content-Length object twice: a
MISS, then a HIT."""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest

from tests.proxy.httpcache.conftest import Stack

NODE_FETCH = """
const results = [];
for (const url of process.argv.slice(1)) {
  const response = await fetch(url);
  results.push({status: response.status, cache: response.headers.get("x-cache"),
                body: await response.text()});
}
console.log(JSON.stringify(results));
"""


def objects(stack: Stack, name: str) -> list[str]:
    for suffix, chunked in (("c", True), ("l", False)):
        stack.origin.configure(
            f"{name}{suffix}", headers=[["cache-control", "max-age=60"]], chunked=chunked
        )
    return [f"{stack.proxy.url}/{name}{s}" for s in ("c", "c", "l", "l")]


def expected(name: str) -> list[tuple[int, str, str]]:
    return [
        (200, result, f"body of {name}{suffix}")
        for suffix in ("c", "l")
        for result in ("MISS", "HIT")
    ]


def test_node_fetch(stack: Stack, name: str) -> None:
    node = shutil.which("node")
    if node is None:
        pytest.fail("node is not installed: the test command installs it")
    urls = objects(stack, name)
    run = subprocess.run(
        [node, "--input-type=module", "-e", NODE_FETCH, "--", *urls],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert run.returncode == 0, run.stderr
    answers = [(r["status"], r["cache"], r["body"]) for r in json.loads(run.stdout)]
    assert answers == expected(name)


def test_curl(stack: Stack, name: str) -> None:
    answers = []
    for url in objects(stack, name):
        run = subprocess.run(
            ["curl", "-sS", "--fail-with-body", "-D", "-", url], capture_output=True, timeout=30
        )
        assert run.returncode == 0, run.stderr
        head, _, body = run.stdout.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").lower().splitlines()
        framing = [line for line in lines if line.startswith(("content-length:", "transfer-enc"))]
        assert len(framing) == 1, lines
        cache = next(line.split(":", 1)[1].strip() for line in lines if line.startswith("x-cache:"))
        answers.append((int(lines[0].split()[1]), cache.upper(), body.decode()))
    assert answers == expected(name)
