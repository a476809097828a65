"""Application wiring, lifecycle, connections to MongoDB, Redis and Kafka."""
