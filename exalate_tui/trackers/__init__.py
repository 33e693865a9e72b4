"""The ticket systems an instance fronts, behind one interface (`adapter.Tracker`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from exalate_tui.home.store import Home
    from exalate_tui.trackers.adapter import Query, Tracker


def open_tracker(home: Home) -> Tracker:
    """The tracker this home's instance fronts: ServiceNow when `tracker.toml` says so,
    else the embedded one (`tracker.sqlite3`, keys prefixed with the instance's short name).

    Close it (`await tracker.close()`) when done.
    """
    from exalate_tui.trackers.embedded import EmbeddedTracker

    config = home.load_tracker_config()
    if config.kind == "servicenow":
        from exalate_tui.trackers.servicenow import ServiceNowTracker, settings_from

        return ServiceNowTracker(settings_from(config))
    instance = home.load_instance()
    home.ensure()
    return EmbeddedTracker(
        home.tracker_path,
        home.attachments_dir,
        short_name=instance.short_name if instance else None,
    )


def check_query(home: Home, text: str) -> Query:
    """`text` checked against the fields of the tracker this home fronts, without opening
    it (a refused trigger writes nothing); `QueryError` with the reason."""
    config = home.load_tracker_config()
    if config.kind == "servicenow":
        from exalate_tui.trackers import servicenow

        return servicenow.check_query(text, config.tables, config.fields)
    from exalate_tui.trackers.embedded import FIELDS, TicketQuery
    from exalate_tui.trackers.query import parse

    return TicketQuery(parse(text, FIELDS))


def tracker_exists(home: Home) -> bool:
    """Whether the home's tracker may hold tickets: False only for an embedded tracker
    never opened, so a command that only reads need not create its file."""
    return home.load_tracker_config().kind != "embedded" or home.tracker_path.exists()
