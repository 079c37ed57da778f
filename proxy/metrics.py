"""The proxy's metric families. Every proxy process builds the same set (see telemetry)."""

from __future__ import annotations

from proxy.telemetry import CounterFamily, GaugeFamily, HistogramFamily, MetricSet

# Origins are remote and slower than cache servers: up to the default origin timeout.
ORIGIN_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class ProxyMetrics:
    """Label values are bounded: routes and ops are fixed sets, backends are the fleet."""

    def __init__(self) -> None:
        self.request_duration = HistogramFamily(
            "ringleader_proxy_request_duration_seconds",
            "Time from request start to the last response byte, by route (kv, http, other).",
            ("route",),
        )
        self.responses = CounterFamily(
            "ringleader_proxy_responses_total",
            "Responses sent, by route and HTTP status code.",
            ("route", "code"),
        )
        self.cache_lookups = CounterFamily(
            "ringleader_proxy_cache_lookups_total",
            "Cache reads by route and result (hit, miss, error: backend failed, served as miss).",
            ("route", "result"),
        )
        self.backend_duration = HistogramFamily(
            "ringleader_backend_request_duration_seconds",
            "Backend operation latency as seen by the proxy, by backend and operation.",
            ("backend", "op"),
        )
        self.backend_errors = CounterFamily(
            "ringleader_backend_errors_total",
            "Backend operations that failed, by backend, operation and kind "
            "(unavailable, timeout, protocol).",
            ("backend", "op", "kind"),
        )
        self.failover_writes = CounterFamily(
            "ringleader_proxy_failover_writes_total",
            "Writes (KV, HTTP cache) that landed on a backend only because the key's owner "
            "is down; their TTL is capped.",
            ("backend",),
        )
        self.ring_epoch = GaugeFamily(
            "ringleader_proxy_ring_epoch",
            "Ring epoch the proxy routes with (the lowest across its workers).",
            (),
            merge="min",
        )
        self.ring_backends = GaugeFamily(
            "ringleader_proxy_ring_backends", "Backends in the proxy's current ring.", (), "min"
        )
        self.backend_up = GaugeFamily(
            "ringleader_backend_up",
            "1 if the proxy's last heartbeat to the backend succeeded, else 0.",
            ("backend",),
            merge="min",
        )
        self.probe_duration = HistogramFamily(
            "ringleader_backend_probe_duration_seconds",
            "Heartbeat round-trip time, by backend.",
            ("backend",),
        )
        self.control_up = GaugeFamily(
            "ringleader_proxy_control_up",
            "1 if the proxy's last ring watch request reached the control plane, else 0 "
            "(always 1 with a static ring).",
            (),
            merge="min",
        )
        self.workers = GaugeFamily(
            "ringleader_proxy_workers", "Worker processes currently running.", ()
        )
        self.worker_restarts = CounterFamily(
            "ringleader_proxy_worker_restarts_total", "Workers that exited and were restarted.", ()
        )
        self.http_cache_results = CounterFamily(
            "ringleader_http_cache_results_total",
            "HTTP cache answers by X-Cache result (hit, miss, stale, revalidated, pass).",
            ("result",),
        )
        self.http_cache_stores = CounterFamily(
            "ringleader_http_cache_stores_total",
            "HTTP cache entry writes by result (stored; rejected: over the backend's item "
            "size; error: backend failed, entry dropped).",
            ("result",),
        )
        self.http_cache_passes = CounterFamily(
            "ringleader_http_cache_pass_marks_total",
            "Hit-for-pass markers set: an answer no request may share, by reason (no-store, "
            "private, set-cookie, vary-star, no-freshness, status, too-large).",
            ("reason",),
        )
        self.http_cache_waiting = GaugeFamily(
            "ringleader_http_cache_waiting_requests",
            "Requests waiting, right now, for another request's origin fetch in their worker.",
            (),
        )
        self.http_cache_coalesced = CounterFamily(
            "ringleader_http_cache_coalesced_waits_total",
            "Requests that waited for another request's origin fetch, by scope (worker: "
            "same process; fleet: a backend lease held elsewhere) and outcome (shared: "
            "served the result; fetched: went to the origin after all).",
            ("scope", "outcome"),
        )
        self.origin_requests = CounterFamily(
            "ringleader_origin_requests_total",
            "Origin requests by response status code, or by failure kind "
            "(connect, timeout, protocol).",
            ("code",),
        )
        self.origin_duration = HistogramFamily(
            "ringleader_origin_request_duration_seconds",
            "Time from sending an origin request to its response headers.",
            (),
            buckets=ORIGIN_BUCKETS,
        )
        # The native fronts (proxy/native/): `front` is memcached or redis, `command` a
        # fixed set per front (anything else counts as "other").
        self.front_commands = CounterFamily(
            "ringleader_proxy_commands_total",
            "Native front commands by front, command and result (ok; error: the backend "
            "answered with an error; backend_error: the backend could not answer; "
            "client_error: refused by the proxy: malformed, over a limit or unsupported).",
            ("front", "command", "result"),
        )
        self.front_duration = HistogramFamily(
            "ringleader_proxy_command_duration_seconds",
            "Native front command latency, from parsing the command to its reply being ready.",
            ("front",),
        )
        self.front_connections = GaugeFamily(
            "ringleader_proxy_connections",
            "Client connections open on each native front.",
            ("front",),
        )
        self.front_refused = CounterFamily(
            "ringleader_proxy_connections_refused_total",
            "Client connections a native front refused: the worker was at its connection cap.",
            ("front",),
        )
        self.set = MetricSet(
            [
                self.request_duration,
                self.responses,
                self.cache_lookups,
                self.backend_duration,
                self.backend_errors,
                self.failover_writes,
                self.ring_epoch,
                self.ring_backends,
                self.backend_up,
                self.probe_duration,
                self.control_up,
                self.workers,
                self.worker_restarts,
                self.http_cache_results,
                self.http_cache_stores,
                self.http_cache_passes,
                self.http_cache_waiting,
                self.http_cache_coalesced,
                self.origin_requests,
                self.origin_duration,
                self.front_commands,
                self.front_duration,
                self.front_connections,
                self.front_refused,
            ]
        )
