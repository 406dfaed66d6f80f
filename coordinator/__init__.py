"""Loa: an event-driven crisis communication coordinator.

The data flows report -> incident -> playbook -> draft -> approval -> statement
-> dispatch; each arrow is a Kafka topic (``coordinator.topics``) and the
current state lives in Redis (``coordinator.keys``).
"""

__version__ = "0.1.0"
