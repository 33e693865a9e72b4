"""Choosing the tracker an instance fronts: ServiceNow checked before it is saved, or back
to the embedded tracker. What `exalate-tui tracker set` and the console's tracker screen
both run."""

from __future__ import annotations

from exalate_tui.domain.models import TrackerConfig
from exalate_tui.home.store import Home


async def check_and_save(home: Home, config: TrackerConfig) -> list[str]:
    """Check the ServiceNow instance `config` names (`servicenow.verify`: reachable, the
    credentials, each table's rights, sys_journal_field, each table's fields), then save
    it with the fields read to `tracker.toml` (0600). Returns what was checked, in words;
    `TrackerError` says the first check that failed, and nothing is written then."""
    from exalate_tui.trackers.servicenow import settings_from, verify

    checked = await verify(settings_from(config))
    home.save_tracker_config(config.model_copy(update={"fields": checked.fields}))
    return checked.lines


def save_local(home: Home) -> None:
    """Back to the embedded tracker (`tracker.sqlite3`); ServiceNow's settings are dropped."""
    home.save_tracker_config(TrackerConfig())
