"""Subscribers: the registry and its indexes, audiences, and statement fan-out."""
