"""The kinds of message both sides send on a connection's streams (docs/protocol.md).

Sync replicas will ride the same streams under kinds of their own; a new kind
is a constant here and a handler in `lifecycle/incoming.py`.
"""

from __future__ import annotations

# Seq 1 of each direction: the sender's short name, proof the secret works both ways.
HELLO = "hello"
PING = "ping"
# An admin's actions, told to the partner (`lifecycle/actions.py`).
DEACTIVATED = "connection.deactivated"
ACTIVATED = "connection.activated"
DELETED = "connection.deleted"
# The partner switched its side to another mode (`{"mode": "script"}`); this side
# keeps its own rules and only records it (`Connection.peer_mode`).
MODE = "connection.mode"
