"""Approvals: who must approve (chain), prompts, decisions, and escalation applied in Redis."""
