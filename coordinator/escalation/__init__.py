"""Escalation: when a request is looked at again (the pure policy) and the timers that keep it."""
