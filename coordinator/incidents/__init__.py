"""Incidents: reports correlated into incidents, and the incident's stored state."""
