"""Runs a rendered container's command with a stub `ringleader` that records its argv.

The control StatefulSet and the registration Job run small shell scripts (deriving the
Raft ID from the pod ordinal, retrying `backend add`). Executing the real script under
/bin/sh, with the env the pod would get, tests what Kubernetes will run rather than what
we hope it contains; the recorded argv is then parsed by the real `ringleader` parser.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.deploy.manifests import Doc

FAKE_TOKEN = "test-token-from-secret"

STUB = f"""#!{sys.executable}
import json, os, sys
with open(os.environ["STUB_ARGV_LOG"], "a") as f:
    f.write(json.dumps(sys.argv[1:]) + "\\n")
print("stub ringleader: (no change)")
"""


def container_env(container: Doc, pod_name: str) -> dict[str, str]:
    """The env Kubernetes would set: literals, the pod name, and a fake Secret value."""
    env: dict[str, str] = {}
    for item in container.get("env", []):
        if "value" in item:
            env[item["name"]] = str(item["value"])
            continue
        source = item["valueFrom"]
        if "secretKeyRef" in source:
            env[item["name"]] = FAKE_TOKEN
        elif source.get("fieldRef", {}).get("fieldPath") == "metadata.name":
            env[item["name"]] = pod_name
        else:
            raise AssertionError(f"unexpected env source {source} in {container['name']}")
    return env


def run_with_stub(
    container: Doc, pod_name: str, workdir: Path, overrides: dict[str, str] | None = None
) -> list[list[str]]:
    """Runs the container's command + args; returns each argv given to `ringleader`."""
    bindir = workdir / "bin"
    bindir.mkdir(parents=True, exist_ok=True)
    stub = bindir / "ringleader"
    stub.write_text(STUB)
    stub.chmod(0o755)
    log = workdir / "argv.jsonl"
    log.unlink(missing_ok=True)
    argv = [*container.get("command", []), *container.get("args", [])]
    assert argv, f"container {container['name']} sets neither command nor args"
    if argv[0] != "/bin/sh":
        # No shell: the image's ENTRYPOINT (ringleader) gets `args` directly.
        argv = ["ringleader", *argv]
    env = {
        "PATH": f"{bindir}:/usr/bin:/bin",
        "STUB_ARGV_LOG": str(log),
        **container_env(container, pod_name),
        **(overrides or {}),
    }
    proc = subprocess.run(
        argv, env=env, capture_output=True, text=True, timeout=30, cwd=workdir, check=False
    )
    assert proc.returncode == 0, f"{container['name']} command failed:\n{proc.stderr}"
    if not log.exists():
        return []
    return [json.loads(line) for line in log.read_text().splitlines()]
