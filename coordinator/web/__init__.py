"""The web process: the HTTP API (reports in, state out) and the public pages."""
