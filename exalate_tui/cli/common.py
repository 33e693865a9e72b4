"""What every command shares: the program's name, the error for bad input, safe
printing, the home's instance, the options accepted before or after a command."""

from __future__ import annotations

import argparse
import json
from collections.abc import Coroutine
from typing import Any, TypeVar

from exalate_tui.domain.models import Connection, Instance, Status
from exalate_tui.errors import ExalateError
from exalate_tui.home.store import Home, NotFound

PROG = "exalate-tui"
# Never printed, never in --json: they let someone else act as this side.
SECRET_FIELDS = frozenset({"secret", "token", "token_hash"})
# Bookkeeping of the handshake, of no use to a reader.
INTERNAL_FIELDS = frozenset({"code_digest"})


class BadInput(ExalateError):
    """Exit 2: str() says which flag or value is wrong and how to fix it."""

    bad_input = True


def inert(text: object) -> str:
    """Text safe for a terminal: control and other invisible characters shown escaped."""
    return "".join(ch if ch.isprintable() else repr(ch)[1:-1] for ch in str(text))


def public(connection: Connection) -> dict[str, Any]:
    """A connection as JSON data, without its secrets; `token_expires` only while the
    invitation can still be used (Pending)."""
    exclude = set(SECRET_FIELDS | INTERNAL_FIELDS)
    if connection.status is not Status.PENDING:
        exclude.add("token_expires")
    return connection.model_dump(mode="json", exclude=exclude)


def print_json(data: object) -> None:
    # ensure_ascii (the default) escapes every control character: the output stays inert.
    print(json.dumps(data, indent=2))


def require_instance(home: Home) -> Instance:
    instance = home.load_instance()
    if instance is None:
        raise BadInput(
            f"this instance is not set up ({home.instance_path} does not exist): "
            f"run `{PROG} init --short-name NAME [--public-url URL]` first"
        )
    return instance


def find(home: Home, cid: str) -> Connection:
    try:
        return home.get_connection(cid)
    except NotFound as error:
        raise BadInput(f"ID: {error}") from None


def options(*, json_flag: bool) -> argparse.ArgumentParser:
    """Options accepted before or after a subcommand's name.

    SUPPRESS keeps a subcommand's default from overwriting a value given before it.
    """
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--home",
        metavar="DIR",
        default=argparse.SUPPRESS,
        help="home folder (default: $EXALATE_TUI_HOME, else the user config folder)",
    )
    if json_flag:
        common.add_argument(
            "--json",
            action="store_true",
            default=argparse.SUPPRESS,
            help="print one JSON document on stdout",
        )
    return common


# What each command module's `register` gets: the shared options as argparse parents.
Parser = argparse.ArgumentParser


T = TypeVar("T")


def run_async(work: Coroutine[Any, Any, T]) -> T:
    """`asyncio.run(work)`. asyncio (with ssl, socket and inspect, ~10 % of `initiate`:
    benchmarks/README.md, headless) loads only for a command that runs a loop; `init`,
    `initiate`, `connections` and the other file-only commands never do."""
    import asyncio

    return asyncio.run(work)
