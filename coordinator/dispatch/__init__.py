"""Dispatch: a published statement fanned out to its audience, handed to SMS and email."""
