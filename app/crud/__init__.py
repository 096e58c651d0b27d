"""Business rules over the ISPmail tables.

Each public function is one transaction: it checks the request against the
current rows, writes, and commits (why the rules commit: ``app/deps.py``).
Whatever it refuses raises a ``Problem`` before any row changes. Changes that
touch alias destinations first lock the alias graph (a row of
``mailprov_locks``; on SQLite the write transaction itself), so two concurrent
edits can neither build a loop nor leave a destination pointing at an address
that another request just deleted.
"""

from app.crud.aliases import (
    add_destination,
    create_alias,
    delete_alias,
    list_aliases,
    read_alias,
    remove_destination,
    replace_destinations,
)
from app.crud.domains import create_domain, delete_domain, list_domains, read_domain
from app.crud.mailboxes import (
    create_mailbox,
    delete_mailbox,
    list_mailboxes,
    read_mailbox,
    update_mailbox,
)

__all__ = [
    "add_destination",
    "create_alias",
    "create_domain",
    "create_mailbox",
    "delete_alias",
    "delete_domain",
    "delete_mailbox",
    "list_aliases",
    "list_domains",
    "list_mailboxes",
    "read_alias",
    "read_domain",
    "read_mailbox",
    "remove_destination",
    "replace_destinations",
    "update_mailbox",
]
