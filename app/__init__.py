"""mailprov: the management plane of an ISPmail-style Postfix + Dovecot server."""

__version__ = "0.1.0"
