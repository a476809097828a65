"""The live fan-out to WebSocket clients: feeds over Redis (seq, history, pub/sub), a session per socket, its send queue."""
