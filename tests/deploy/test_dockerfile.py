"""deploy/docker/Dockerfile, checked statically: there is no Docker engine on CI machines,
so the image is not built here. The checks cover what the brief and Kubernetes rely on:
multi-stage, non-root, one `ringleader` entrypoint, health handled by probes, and a
build context that has what the COPY lines name."""

from __future__ import annotations

import json
import re
import tomllib
from dataclasses import dataclass

from tests.deploy.manifests import OVERLAYS, RENDERS, ROOT, containers, find, pod_spec, render

DOCKERFILE = ROOT / "deploy" / "docker" / "Dockerfile"
DOCKERIGNORE = ROOT / "deploy" / "docker" / "Dockerfile.dockerignore"


@dataclass(frozen=True)
class Instruction:
    keyword: str
    value: str
    comments: tuple[str, ...]
    """The comment lines right above the instruction."""


def instructions() -> list[Instruction]:
    """Dockerfile instructions with line continuations joined."""
    found: list[Instruction] = []
    comments: list[str] = []
    pending = ""
    for raw in DOCKERFILE.read_text().splitlines():
        line = raw.strip()
        if line.startswith("#") and not pending:
            comments.append(line.lstrip("# "))
            continue
        if not line:
            if not pending:
                comments = []
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        keyword, _, value = (pending + line).partition(" ")
        found.append(Instruction(keyword.upper(), value.strip(), tuple(comments)))
        comments, pending = [], ""
    return found


def stages() -> list[list[Instruction]]:
    result: list[list[Instruction]] = []
    for item in instructions():
        if item.keyword == "FROM":
            result.append([])
        if result:
            result[-1].append(item)
    return result


def last(stage: list[Instruction], keyword: str) -> Instruction | None:
    matches = [i for i in stage if i.keyword == keyword]
    return matches[-1] if matches else None


def test_multi_stage_build() -> None:
    all_stages = stages()
    assert len(all_stages) >= 2
    names = [re.search(r"\bAS\s+(\S+)", s[0].value, re.I) for s in all_stages]
    runtime = all_stages[-1]
    earlier = {m.group(1) for m in names[:-1] if m}
    copied_from = {
        m.group(1) for i in runtime if i.keyword == "COPY"
        for m in [re.search(r"--from=(\S+)", i.value)] if m
    }  # fmt: skip
    assert copied_from, "the runtime stage takes the build stage's output"
    assert copied_from <= earlier


def test_runs_as_non_root_with_the_uid_kubernetes_expects() -> None:
    user = last(stages()[-1], "USER")
    assert user is not None, "the runtime stage must set USER"
    uid = user.value.split(":")[0]
    assert uid.isdigit(), "a numeric uid lets runAsNonRoot verify it"
    assert int(uid) != 0
    for overlay in OVERLAYS:
        docs = render(overlay)
        for kind, name in (("StatefulSet", "ringleader-control"),
                           ("Deployment", "ringleader-proxy"),
                           ("Job", "ringleader-register-backends")):  # fmt: skip
            assert pod_spec(find(docs, kind, name))["securityContext"]["runAsUser"] == int(uid)


def test_one_entrypoint_runs_any_subcommand() -> None:
    entrypoint = last(stages()[-1], "ENTRYPOINT")
    assert entrypoint is not None
    # Exec form, so signals (SIGTERM for draining) reach ringleader, not a shell.
    assert json.loads(entrypoint.value) == ["ringleader"]
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert "ringleader" in scripts
    # The proxy passes a subcommand as args to that entrypoint; the control and Job
    # containers replace it with a shell wrapper that execs `ringleader ...`.
    for overlay in RENDERS:
        docs = render(overlay)
        for proxy in containers(find(docs, "Deployment", "ringleader-proxy")):
            assert "command" not in proxy
            assert proxy["args"][0] == "proxy"


def test_health_is_declared() -> None:
    healthcheck = last(stages()[-1], "HEALTHCHECK")
    assert healthcheck is not None, "set HEALTHCHECK, or HEALTHCHECK NONE saying why"
    if healthcheck.value.upper() == "NONE":
        reason = " ".join(healthcheck.comments).lower()
        assert "probe" in reason, "HEALTHCHECK NONE must say that Kubernetes probes are used"


def test_build_context_has_what_copy_needs() -> None:
    ignored = [line for line in DOCKERIGNORE.read_text().splitlines() if line.startswith("!")]
    allowed = {line[1:].rstrip("/") for line in ignored}
    for stage in stages()[:-1]:
        for item in stage:
            if item.keyword != "COPY" or "--from" in item.value:
                continue
            *sources, _dest = item.value.split()
            for source in sources:
                assert (ROOT / source).exists(), f"COPY {source}: not in the repository"
                assert source.rstrip("/") in allowed, f"COPY {source}: excluded by .dockerignore"
