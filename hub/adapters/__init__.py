"""Adapters to the outside: MongoDB, Redis, Kafka and the bundled broker, Stripe, outgoing HTTP, and the Redis-backed rate limits and caps."""
