"""Subscribers: the registry and its indexes, opt-in and opt-out, proofs, CSV import and export."""
