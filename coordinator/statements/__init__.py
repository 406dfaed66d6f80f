"""Statements: what an approval makes, kept in Redis, and its publication on the public record."""
