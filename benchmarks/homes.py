"""Homes filled for benchmarks, made with the same store the console uses."""

from __future__ import annotations

from pathlib import Path

from pydantic import SecretStr

from exalate_tui.domain.models import Connection, Instance, Mode, Role, Status, Topology
from exalate_tui.home.store import Home

# Where a calling home's partners are: the discard port, where nothing listens on this
# machine, so each link tries, is refused, and backs off (as with partners that are down).
UNREACHABLE = "http://127.0.0.1:9"


def home_with_connections(path: Path, count: int) -> Home:
    """A public side (the seed's ServiceNow): every partner polls it, no link calls out."""
    home = Home(path)
    home.save_instance(Instance(short_name="snow", public_url="https://snow.example.com"))
    for n in range(count):
        home.save_connection(
            Connection(
                name=f"snow_to_partner{n:04d}",
                description="benchmark connection",
                mode=Mode.SCRIPT if n % 2 else Mode.BASIC,
                topology=Topology.PUBLIC_PRIVATE,
                role=Role.INITIATOR,
                local_name="snow",
                remote_name=f"partner{n:04d}",
                status=Status.ACTIVE if n % 3 else Status.PENDING,
            )
        )
    return home


def home_that_calls_out(path: Path, count: int) -> Home:
    """A private side: it accepted every connection and polls each partner itself, so its
    supervisor starts a link per connection (httpx and the client load)."""
    home = Home(path)
    home.save_instance(Instance(short_name="jira"))
    for n in range(count):
        home.save_connection(
            Connection(
                name=f"jira_from_partner{n:04d}",
                description="benchmark connection",
                mode=Mode.SCRIPT if n % 2 else Mode.BASIC,
                topology=Topology.PUBLIC_PRIVATE,
                role=Role.ACCEPTOR,
                local_name="jira",
                remote_name=f"partner{n:04d}",
                remote_url=UNREACHABLE,
                status=Status.ACTIVE,
                secret=SecretStr(f"benchmark-secret-{n:04d}-" + "s" * 24),
            )
        )
    return home
