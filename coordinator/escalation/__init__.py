"""Escalation: the pure policy (`next_step`), its transitions in Redis, and the timers."""
