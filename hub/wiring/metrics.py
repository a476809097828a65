"""Prometheus metrics an operator watches. Later modules add theirs here so that one
place lists everything /metrics exposes."""

from prometheus_client import Counter, Gauge, Histogram

# Its _count series is the request count by handler, method and status.
HTTP_LATENCY = Histogram(
    "hub_http_request_duration_seconds", "HTTP request latency", ["handler", "method", "status"],
    buckets=(0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
AUTH_EVENTS = Counter(
    "hub_auth_events_total", "Sign-in outcomes", ["event"]
)
OUTBOX_PUBLISHED = Counter(
    "hub_outbox_events_published_total", "Events published from the outbox", ["topic"]
)
EVENTS_CONSUMED = Counter(
    "hub_events_consumed_total", "Kafka events handled, by consumer group and outcome", ["group", "outcome"]
)
EVENTS_DEAD_LETTERED = Counter(
    "hub_events_dead_lettered_total", "Events sent to the dead-letter topic, by consumer group and why: "
    "invalid_event, forged_source, rejected, unprocessable (or batch_unprocessable, not sent)", ["group", "code"]
)
TEMPLATE_FAILURES = Counter(
    "hub_template_failures_total", "Admin templates that failed when rendering (the default was used), by channel",
    ["channel"]
)
CONSUMER_LAG = Gauge(
    "hub_consumer_lag_messages", "Messages not yet consumed, by consumer group and topic", ["group", "topic"]
)
DELIVERIES = Counter(
    "hub_notification_deliveries_total", "Delivery status changes, by channel, status and reason",
    ["channel", "status", "reason"]
)
NOTIFICATIONS_HELD = Gauge(
    "hub_notifications_held", "Notifications with a delivery held (do not disturb, frequency cap)"
)
NOTIFY_IN_FLIGHT = Gauge(
    "hub_notifications_in_flight", "Notifications this process is dispatching or about to"
)
WEBSOCKET_CONNECTIONS = Gauge(
    "hub_websocket_connections", "Open WebSocket connections on this process"
)
WEBSOCKET_FRAMES = Counter(
    "hub_websocket_frames_total", "Frames to WebSocket clients: sent, or conflated (replaced by a newer one)",
    ["outcome"],
)
WEBSOCKET_CLOSED = Counter(
    "hub_websocket_closed_total", "WebSocket connections the hub closed, by reason", ["reason"]
)
PUSH_TARGETS = Counter(
    "hub_push_targets_total", "Push sends per target, by provider (webpush, apns, fcm), outcome and reason",
    ["provider", "status", "reason"]
)
COUPON_REDEMPTIONS = Counter(
    "hub_coupon_redemptions_total", "Coupon uses taken by orders, refused at the limits, or given back",
    ["outcome"],
)
OUTBOX_BACKLOG = Gauge(
    "hub_outbox_backlog_documents",
    "Documents holding events not yet published to Kafka, by topic, as of this process's last full scan (every 60 s)",
    ["topic"],
)
CONNECTIONS_REFUSED = Counter(
    "hub_connections_refused_total", "TCP connections closed at once: over HUB_MAX_CONNECTIONS or the per-address cap",
    ["reason"]
)
BROADCAST_RECIPIENTS = Counter(
    "hub_broadcast_recipients_total", "Broadcast recipients handled by this process: processed (notified by "
    "their rules), or skipped (the broadcast was cancelled first); rate() gives recipients per second",
    ["outcome"],
)
