"""Channels: one module a channel behind one small async interface (``channels.base``).

The rest of Loa never imports a provider library directly; channels are
registered in one explicit mapping (``channels.registry``).
"""
