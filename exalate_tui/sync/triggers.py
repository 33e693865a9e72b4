"""A connection's triggers: which local tickets sync automatically.

Each is a filter in the tracker's own query language (ServiceNow's encoded
query), checked against the tracker's fields before it is saved: unlike
ServiceNow, which drops the parts it cannot read and then matches every
record, a trigger that does not parse is refused with the reason.
"""

from __future__ import annotations

from collections.abc import Callable

from exalate_tui.domain.models import Connection
from exalate_tui.errors import ExalateError
from exalate_tui.home.store import Home
from exalate_tui.trackers.adapter import Query


class TriggerError(ExalateError):
    """No trigger by that number; str() says which exist."""

    bad_input = True


def add_trigger(home: Home, check: Callable[[str], Query], cid: str, text: str) -> Connection:
    """Check `text` with `check` (a tracker's `check_query`: raises `QueryError` with the
    reason) and add it to `cid`'s triggers."""
    query = check(text.strip())

    def add(connection: Connection) -> None:
        if query.text not in connection.triggers:
            connection.triggers = [*connection.triggers, query.text]

    return home.update_connection(cid, add)


def remove_trigger(home: Home, cid: str, number: int) -> str:
    """Remove trigger `number` (1-based, as `triggers list` shows); returns its text."""
    removed: list[str] = []

    def remove(connection: Connection) -> None:
        if not 1 <= number <= len(connection.triggers):
            shown = len(connection.triggers)
            raise TriggerError(
                f"connection {connection.name!r} has no trigger {number}"
                + (f" (it has 1 to {shown})" if shown else " (it has none)")
            )
        triggers = list(connection.triggers)
        removed.append(triggers.pop(number - 1))
        connection.triggers = triggers

    home.update_connection(cid, remove)
    return removed[0]
