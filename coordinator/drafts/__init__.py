"""Drafts: a playbook's templates rendered for one incident, per channel and language."""
