"""Tornado HTTP and WebSocket handlers: parse, authorize, call the domain, answer."""
