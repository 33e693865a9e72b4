"""Every error exalate-tui raises on purpose, in one tree (as httpx keeps its own).

    ExalateError                  str() is one line (or a few) saying what and how to fix
    ├── StoreError                home/store.py: a file of the home cannot be used
    ├── NotFound                  home/store.py: no connection has that id       (bad input)
    ├── NameTaken                 home/store.py: a connection already has that name (bad input)
    ├── InvitationError           domain/invitation.py: a code that cannot be used (bad input)
    ├── StateError                transport/streams.py: the message store (state.sqlite3, or
    │                             the PostgreSQL database) cannot be used or reached
    ├── DatabaseUrlError          transport/storage.py: a PostgreSQL URL that does not parse
    │                             (bad input)
    ├── DatabaseKeyError          transport/storage.py: the database key of the connections'
    │                             secrets missing, malformed or not theirs (bad input)
    ├── ConflictingImport         transport/pg_connections.py: a connection file moved into
    │                             the database is there with other content (bad input)
    ├── Gap                       transport/streams.py: a batch starts after a missing message
    ├── RemoteError               transport/client.py: a call to a partner's node failed
    ├── ApiError                  transport/errors.py: the node answers a request with an error
    ├── HandshakeRefused          transport/hooks.py: an offer matches no invitation held here
    ├── ActionError               lifecycle/actions.py: the action does not apply (bad input)
    ├── AcceptError               lifecycle/accept.py: the accept did not happen (bad input
    │                             or not, per error: a damaged code is, a partner's outage not)
    ├── TrackerError              trackers/adapter.py: the tracker refused or could not do it
    │   ├── TicketNotFound        no ticket has that key                         (bad input)
    │   ├── TicketRefused         a value the tracker does not take              (bad input)
    │   └── TrackerUnavailable    the tracker cannot be used now (`unavailable`)
    ├── QueryError                trackers/adapter.py: a filter that does not parse (bad input)
    ├── ReplicaError              sync/replica.py: a partner's replica that cannot be used
    ├── RuleError                 sync/rules.py: a rule failed on one ticket
    │   └── NotSyncable           the rules do not sync that ticket (Basic: incidents only)
    ├── SyncStoreError            sync/store.py: the sync tables cannot be used
    │   └── SyncDatabaseError     sync/pg_store.py: their database out of reach (also a
    │                             StateError: an outage the engine waits out)
    ├── TriggerError              sync/triggers.py: no trigger by that number   (bad input)
    ├── NodeRunning, NodeError    transport/background.py: the home's node (start, stop)
    └── BadInput                  cli: a flag's value is refused                 (bad input)

Each class lives in the module that raises it; this module holds the root.
`bad_input` says whether the user fixes it by changing what they typed: the
CLI maps it to its exit codes in one place (2 when True, else 1). `lines`
says whether str() is meant as several lines (each printed as one).
"""

from __future__ import annotations


class ExalateError(Exception):
    """The root of exalate-tui's own errors."""

    bad_input: bool = False
    # Whether str() may hold several lines meant as lines (each refused flag, a log's
    # end); otherwise a line break in it (a library's message) is shown escaped.
    lines: bool = False
