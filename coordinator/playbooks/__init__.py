"""Playbooks: YAML -> Playbook models (loader), and their templates rendered into drafts."""
