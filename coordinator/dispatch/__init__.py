"""Dispatch: an approved statement handed to its channels."""
