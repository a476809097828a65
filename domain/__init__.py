"""Business rules. Nothing in here imports Tornado, Motor, Redis or Kafka: stores and
clocks are passed in."""
