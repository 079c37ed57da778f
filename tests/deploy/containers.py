"""Runs a rendered container's command with a stub `ringleader` that records its argv.

The control StatefulSet and the registration Job run small shell scripts (deriving the
Raft ID from the pod ordinal, retrying `backend add`). Executing the real script under
/bin/sh, with the env the pod would get, tests what Kubernetes will run rather than what
we hope it contains; the recorded argv is then parsed by the real `ringleader` parser.
Secrets reach the containers as files only: SecretMounts writes them where a test can
read them and moves the recorded paths there.
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from proxy import cli as proxy_cli
from proxy import config as proxy_config
from ringleader.backend_url import BackendSpec, parse_backend_url
from ringleader.cli import build_parser
from tests.deploy.manifests import Doc, containers, find, pod_spec

FAKE_TOKEN = "test-token-from-secret"

STUB = f"""#!{sys.executable}
import json, os, sys
with open(os.environ["STUB_ARGV_LOG"], "a") as f:
    f.write(json.dumps(sys.argv[1:]) + "\\n")
print("stub ringleader: (no change)")
"""


def container_env(container: Doc, pod_name: str) -> dict[str, str]:
    """The env Kubernetes would set: literals and the pod name. Anything else, a Secret
    above all, is an error: the token belongs in a file."""
    assert "envFrom" not in container, f"{container['name']} imports a whole env source"
    env: dict[str, str] = {}
    for item in container.get("env", []):
        if "value" in item:
            env[item["name"]] = str(item["value"])
            continue
        source = item["valueFrom"]
        if source.get("fieldRef", {}).get("fieldPath") == "metadata.name":
            env[item["name"]] = pod_name
        else:
            raise AssertionError(f"unexpected env source {source} in {container['name']}")
    return env


@dataclass(frozen=True)
class SecretMounts:
    """The Secret volumes a container mounts, written under a test directory with
    FAKE_TOKEN in every listed key."""

    local: dict[str, Path]
    """mountPath -> the directory standing in for it."""

    @classmethod
    def write(cls, workload: Doc, container: Doc, root: Path) -> SecretMounts:
        secrets = {
            v["name"]: v["secret"] for v in pod_spec(workload).get("volumes", []) if "secret" in v
        }
        local: dict[str, Path] = {}
        for mount in container.get("volumeMounts", []):
            secret = secrets.get(mount["name"])
            if secret is None:
                continue
            # A Secret created out of band (prod) has no keys in the render: the volume
            # must name the ones it needs.
            assert secret.get("items"), f"volume {mount['name']} lists no Secret keys"
            directory = root / "secrets" / mount["name"]
            for item in secret["items"]:
                path = directory / item["path"]
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(FAKE_TOKEN + "\n")
            local[mount["mountPath"].rstrip("/")] = directory
        return cls(local)

    def localize(self, argv: list[str]) -> list[str]:
        """argv with every path inside a Secret mount moved to the written copy."""
        result: list[str] = []
        for arg in argv:
            for mount_path, directory in self.local.items():
                if arg.startswith(mount_path + "/"):
                    arg = str(directory) + arg[len(mount_path) :]
            result.append(arg)
        return result


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


def registered_backends(docs: tuple[Doc, ...], workdir: Path) -> dict[str, list[BackendSpec]]:
    """pool -> the backends that the registration Job's containers add to it, from their
    real scripts, each `ringleader backend add` parsed by the real parser."""
    pools: dict[str, list[BackendSpec]] = {}
    for container in containers(find(docs, "Job", "ringleader-register-backends")):
        name = container["name"]
        for argv in run_with_stub(container, "ringleader-register-backends-x", workdir / name):
            args = build_parser().parse_args(argv)
            assert (args.command, args.action) == ("backend", "add"), f"{name}: {argv}"
            assert args.control == ["http://ringleader-control:7000"], f"{name}: {argv}"
            pools.setdefault(args.pool, []).append(parse_backend_url(args.target))
    return pools


def proxy_config_of(deployment: Doc, container: Doc, workdir: Path) -> proxy_config.ProxyConfig:
    """The config that the container's `ringleader proxy` builds, by the real parser, with
    its Secret files written under `workdir`. Clear $RINGLEADER_TOKEN first, so that the
    token can only come from the file."""
    where = workdir / container["name"]
    (argv,) = run_with_stub(container, "ringleader-proxy-abc", where)
    args = build_parser().parse_args(
        SecretMounts.write(deployment, container, where).localize(argv)
    )
    assert args.command == "proxy"
    return proxy_config.build(proxy_cli.settings_from(args))
