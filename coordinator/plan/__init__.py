"""Plan: an incident gets its playbook (selection), its draft and approval request (planner)."""
