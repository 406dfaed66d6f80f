"""Playbooks: YAML -> Playbook models (loader) and incident -> playbook (selection)."""
