"""Storing a connection the Initiate wizard issued: the I/O half of initiating.

The wizard (`flows.initiate`) makes the connection and its code without
touching the disk; the CLI, and the console in a worker, store them here.
"""

from __future__ import annotations

from exalate_tui.domain.models import Connection, Instance
from exalate_tui.home.store import Home, NameTaken


def save_issued(home: Home, connection: Connection, instance: Instance | None = None) -> bool:
    """Write the issued connection (pending), and `instance` first when it changed.

    False when another process took the connection's name since the wizard
    checked it: the check that counts is this one, under the home's lock.
    """
    if instance is not None:
        home.save_instance(instance)
    try:
        home.save_connection(connection)
    except NameTaken:
        return False
    return True
