"""Inbound messages: SMS replies and keywords (email links come with the web inbox)."""
