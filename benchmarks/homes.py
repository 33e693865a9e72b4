"""Homes filled for benchmarks, made with the same store the console uses."""

from __future__ import annotations

from pathlib import Path

from exalate_tui.domain.models import Connection, Instance, Mode, Role, Status, Topology
from exalate_tui.home.store import Home


def home_with_connections(path: Path, count: int) -> Home:
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
