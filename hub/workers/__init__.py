"""Background workers: Kafka consumers, the outbox relay, the sweeper, the notification dispatcher."""
