"""The tracker's settings form: which tracker this instance fronts (the embedded one or
ServiceNow), and for ServiceNow its URL, how to sign in, the secret, the tables and how
often to look for changes.

Pure Python, no I/O: the form takes `tracker.toml` as it is and hands back the
`TrackerConfig` to check and save (`trackers.setup.check_and_save`, what `exalate-tui
tracker set` runs); the console's tracker screen renders it. The secret is never shown:
the field starts empty, and left empty it keeps the secret already stored for that way
of signing in.
"""

from __future__ import annotations

import re

from pydantic import SecretStr, ValidationError

from exalate_tui.domain.models import TrackerConfig, check_url, normalize_url

KINDS = {"embedded": "Embedded tracker (tracker.sqlite3)", "servicenow": "ServiceNow"}
AUTHS = {"basic": "User and password", "oauth": "OAuth client credentials"}
FIELDS = ("kind", "url", "auth", "user", "secret", "tables", "poll")
# The fields ServiceNow needs; the embedded tracker needs none of them.
SERVICENOW = ("url", "auth", "user", "secret", "tables", "poll")
_TABLE = re.compile(r"[a-z][a-z0-9_]{0,79}")


def labels(auth: str) -> dict[str, str]:
    """Each field's label, which starts its error; the user and secret follow `auth`."""
    oauth = auth == "oauth"
    return {
        "kind": "Tracker",
        "url": "ServiceNow URL",
        "auth": "Sign in with",
        "user": "Client id" if oauth else "User",
        "secret": "Client secret" if oauth else "Password",
        "tables": "Tables",
        "poll": "Look every (s)",
    }


class TrackerForm:
    """The settings being edited, each field's problem (`errors`), ServiceNow's refusal
    of the last check (`failure`) and what the last check passed (`checked`)."""

    def __init__(self, config: TrackerConfig) -> None:
        self.stored = config
        oauth = bool(config.client_id)
        self.values = {
            "kind": config.kind,
            "url": config.url or "",
            "auth": "oauth" if oauth else "basic",
            "user": (config.client_id if oauth else config.user) or "",
            "secret": "",
            "tables": ", ".join(config.tables),
            "poll": f"{config.poll:g}",
        }
        self.errors: dict[str, str] = {}
        self.failure: str | None = None
        self.checked: list[str] = []

    @property
    def servicenow(self) -> bool:
        return self.values["kind"] == "servicenow"

    def shown(self) -> tuple[str, ...]:
        """The fields the form shows now."""
        return ("kind", *SERVICENOW) if self.servicenow else ("kind",)

    def kept_secret(self) -> SecretStr | None:
        """The stored secret for the way of signing in chosen, if there is one."""
        if self.values["auth"] == "oauth":
            return self.stored.client_secret if self.stored.client_id else None
        return self.stored.password if self.stored.user else None

    def set(self, name: str, value: str) -> None:
        self.values[name] = value
        self.failure = None
        self.errors = {k: v for k, v in self._problems().items() if k == name or k in self.errors}

    def _problems(self) -> dict[str, str]:
        if not self.servicenow:
            return {}
        words = labels(self.values["auth"])
        problems: dict[str, str] = {}
        url = self.values["url"].strip()
        try:
            check_url(url)
        except ValueError as error:
            reason = str(error).replace("example.exalate.net", "acme.service-now.com")
            problems["url"] = f"{words['url']} {reason}."
        user = self.values["user"].strip()
        if not user:
            problems["user"] = f"{words['user']} is required."
        elif len(user) > 255:
            problems["user"] = f"{words['user']} must be at most 255 characters."
        if not self.values["secret"] and self.kept_secret() is None:
            problems["secret"] = f"{words['secret']} is required."
        tables = self.tables()
        bad = [t for t in tables if not _TABLE.fullmatch(t)]
        if not tables:
            problems["tables"] = "Tables: give at least one, e.g. incident."
        elif bad:
            problems["tables"] = (
                f"Tables: {bad[0]!r} is not a table name (lower-case letters, digits and _)."
            )
        try:
            poll = float(self.values["poll"])
        except ValueError:
            poll = -1.0
        if not 0 < poll <= 3600:
            problems["poll"] = f"{words['poll']}: a number of seconds above 0, up to 3600."
        return problems

    def tables(self) -> list[str]:
        names = re.split(r"[,\s]+", self.values["tables"].strip())
        return list(dict.fromkeys(name for name in names if name))

    def config(self) -> TrackerConfig | None:
        """The settings to check and save, or None with every problem in `errors`."""
        self.errors = self._problems()
        self.failure = None
        if self.errors:
            return None
        if not self.servicenow:
            return TrackerConfig()
        secret = SecretStr(self.values["secret"]) if self.values["secret"] else self.kept_secret()
        user = self.values["user"].strip()
        oauth = self.values["auth"] == "oauth"
        try:
            return TrackerConfig(
                kind="servicenow",
                url=normalize_url(self.values["url"]),
                user=None if oauth else user,
                password=None if oauth else secret,
                client_id=user if oauth else None,
                client_secret=secret if oauth else None,
                tables=self.tables(),
                poll=float(self.values["poll"]),
            )
        except ValidationError as error:
            first = error.errors()[0]
            self.failure = f"{first['loc'][0] if first['loc'] else 'settings'}: {first['msg']}"
            return None

    def refused(self, reason: str) -> None:
        """ServiceNow's check failed: nothing was saved."""
        self.failure = reason
        self.checked = []

    def saved(self, checked: list[str]) -> None:
        self.checked = checked
        self.failure = None
