"""Entry point and wiring: settings to a running process (container of stores and services, lifecycle, HTTP server, routes, OpenAPI, logs, metrics)."""
