"""The native fronts on Kubernetes (deploy/k8s/components/native-fronts), in the dev overlay
and in prod with the Component added as docs/runbook.md says: the proxy Service exposes
11211 and 6379, each routed to the container that runs that front on that port, over a pool
whose registered backends all speak the front's protocol."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.deploy.containers import proxy_config_of, registered_backends
from tests.deploy.manifests import (
    FRONTS_RENDERS,
    containers,
    find,
    labels_of,
    port_number,
    render,
    selects,
    service_named,
)

# Each front on its protocol's usual port, so existing clients change only the host.
FRONT_PORTS = {"memcached": 11211, "redis": 6379}


@pytest.mark.parametrize("name", FRONTS_RENDERS)
def test_service_routes_each_front_to_its_protocol_pure_pool(
    name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    docs = render(name)
    service = service_named(docs, "ringleader-proxy")
    deployment = find(docs, "Deployment", "ringleader-proxy")
    assert selects(service["spec"]["selector"], labels_of(deployment))
    pools = registered_backends(docs, tmp_path)
    monkeypatch.delenv("RINGLEADER_TOKEN", raising=False)
    served: dict[str, str] = {}
    for front, port in FRONT_PORTS.items():
        (service_port,) = [p for p in service["spec"]["ports"] if p["port"] == port]
        target = service_port["targetPort"]
        assert isinstance(target, str), "a named port reaches only the container declaring it"
        (container,) = [
            c for c in containers(deployment) if any(p["name"] == target for p in c["ports"])
        ]
        config = proxy_config_of(deployment, container, tmp_path)
        listen = config.memcached_listen if front == "memcached" else config.redis_listen
        assert listen is not None, f"{container['name']} runs no {front} front"
        assert listen.port == port_number(container, target)
        protocols = {spec.protocol.value for spec in pools.get(config.pool, [])}
        assert protocols == {front}, f"pool {config.pool} of the {front} front: {protocols}"
        served[front] = config.pool
    assert len(set(served.values())) == len(FRONT_PORTS), f"one pool per front: {served}"


def test_prod_overlay_leaves_the_fronts_off() -> None:
    """Prod enables them only when an operator adds the Component (docs/runbook.md)."""
    service = service_named(render("prod"), "ringleader-proxy")
    assert not {p["port"] for p in service["spec"]["ports"]} & set(FRONT_PORTS.values())
