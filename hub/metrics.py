"""Prometheus metrics an operator watches. Later modules add theirs here so that one
place lists everything /metrics exposes."""

from prometheus_client import Counter, Histogram

HTTP_REQUESTS = Counter(
    "hub_http_requests_total", "HTTP requests answered", ["handler", "method", "status"]
)
HTTP_LATENCY = Histogram(
    "hub_http_request_duration_seconds", "HTTP request latency", ["handler", "method"],
    buckets=(0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
AUTH_EVENTS = Counter(
    "hub_auth_events_total", "Sign-in outcomes", ["event"]
)
