"""Delivery channels (email, SMS, web push, WebSocket)."""
