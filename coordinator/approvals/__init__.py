"""Approvals: who must approve (pure), the request, and the decisions on it."""
