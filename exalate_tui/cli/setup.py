"""Setting up: `init` (instance.toml), `initiate` (prints an invitation code) and
`accept` (a partner's code). They drive the console's own flows
(`InitiateWizard`, `AcceptWizard`), so both refuse the same input with the
same words."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from exalate_tui.cli.common import (
    PROG,
    BadInput,
    inert,
    print_json,
    public,
    require_instance,
    run_async,
)
from exalate_tui.domain.models import Instance, check_database, check_instance, shown_database
from exalate_tui.flows.accept import AcceptWizard, Stage
from exalate_tui.flows.initiate import InitiateWizard, Step
from exalate_tui.home.store import Home
from exalate_tui.lifecycle.initiate import save_issued
from exalate_tui.protocol.api import UrlCheck

# The flag that sets each wizard field, so an error names what to change.
FLAGS = {
    "dest_url": "--url",
    "mode": "--mode",
    "local_name": "--local-name",
    "remote_name": "--remote-name",
    "name": "--name",
    "description": "--description",
}


def cmd_init(args: argparse.Namespace, home: Home) -> int:
    public_url, problems = check_instance(args.short_name, args.public_url)
    database = args.database
    if database:
        try:
            database = check_database(database)
        except ValueError as error:
            problems["database"] = str(error)
    if problems:
        words = {
            "short_name": "--short-name: this instance's short name",
            "public_url": "--public-url: this instance's public URL",
            "database": "--database: the PostgreSQL URL",
        }
        raise BadInput("\n".join(f"{words[f]} {reason}." for f, reason in problems.items()))

    current = home.load_instance()
    if current is None:
        instance = Instance(
            short_name=args.short_name, public_url=public_url or None, database=database or None
        )
    else:
        update: dict[str, Any] = {"short_name": args.short_name}
        if public_url is not None:  # absent keeps it, "" removes it
            update["public_url"] = public_url or None
        if database is not None:  # the same
            update["database"] = database or None
        instance = current.model_copy(update=update)
    moved = database is not None and (current.database if current else None) != (database or None)
    from exalate_tui.transport.storage import ENV, KEY_ENV

    url = os.environ.get(ENV, "").strip() or instance.database
    # Before instance.toml: a move that cannot be made leaves the home as it was.
    made_key, files = _into_database(home, url) if url else (None, [])
    home.save_instance(instance)
    print(f"Saved {inert(home.instance_path)}")
    if files:
        _drop_moved(home, files)
        buried = sum(1 for moved in files if moved.startswith("tombstone:"))
        print(
            f"  moved into the database: {len(files) - buried} connection(s) and {buried} "
            f"tombstone(s) from {inert(home.path)} (their files removed)"
        )
    if moved and not instance.database and current is not None and current.database:
        print(
            f"{PROG} init: warning: connections kept in "
            f"{inert(shown_database(current.database))} stay there: this home reads "
            f"{inert(home.connections_dir)} again",
            file=sys.stderr,
        )
    if moved and home.state_path.exists():
        print(
            f"{PROG} init: warning: {inert(home.state_path)} is left as it was: messages "
            "not yet delivered from it are not moved to the new store",
            file=sys.stderr,
        )
    print(f"  short name: {inert(instance.short_name)}")
    print(
        f"  public URL: {inert(instance.public_url)}"
        if instance.public_url
        else "  public URL: none (partners cannot call this instance; "
        "set one with --public-url to invite private partners)"
    )
    if os.environ.get(ENV, "").strip():
        print(f"  streams: PostgreSQL, from {ENV} (it overrides instance.toml)")
    elif instance.database:
        print(
            f"  streams: PostgreSQL, {inert(shown_database(instance.database))} "
            f"(its schema: `{PROG} db migrate`, reachable: `{PROG} db check`)"
        )
    else:
        print(f"  streams: {inert(home.state_path)}")
    if url:
        print("  connections: in the database too, their secrets encrypted with the key in")
        if os.environ.get(KEY_ENV, "").strip():
            print(f"    ${KEY_ENV}; every worker of this database needs the same key")
        else:
            from exalate_tui.transport.storage import key_path

            print(
                f"    {inert(key_path(home))}{' (made now)' if made_key else ''}: copy it to "
                f"every other worker's home (0600), or give them all ${KEY_ENV}"
            )
    return 0


def _into_database(home: Home, url: str) -> tuple[Path | None, list[str]]:
    """Make the home's database key if it has none; move its connection files (and
    tombstones) into the database in one transaction. (The key made now, the ids
    moved.) Whatever refuses it leaves the home and the database as they were."""
    from exalate_tui.home.store import FileConnections
    from exalate_tui.transport.storage import make_key, open_pg_connections

    files = FileConnections(home)
    loaded = files.load()
    if loaded.problems:
        raise loaded.problems[0]  # a file that does not parse is never moved, nor dropped
    buried = []
    for cid, when in files.tombstones():
        tombstone = files.get_tombstone(cid)
        if tombstone is not None:
            buried.append((tombstone, when))
    made = make_key(home)
    try:
        if loaded.connections or buried:
            store = open_pg_connections(home, url)
            try:
                store.import_all(loaded.connections, buried)
            finally:
                store.close()
    except BaseException:
        if made is not None:
            made.unlink(missing_ok=True)
        raise
    return made, [c.id for c in loaded.connections] + [f"tombstone:{t.id}" for t, _ in buried]


def _drop_moved(home: Home, moved: list[str]) -> None:
    """Remove the files of what is in the database now (a run cut short before this
    moves them again: the database skips what it holds the same)."""
    from exalate_tui.home.store import FileConnections

    files = FileConnections(home)
    for cid in moved:
        if cid.startswith("tombstone:"):
            files.drop_tombstone(cid.removeprefix("tombstone:"))
        else:
            files.delete(cid)


def cmd_initiate(args: argparse.Namespace, home: Home) -> int:
    instance = require_instance(home)
    known = home.load_connections().connections
    wizard = InitiateWizard(instance, known, require_verified=not args.no_verify)

    if args.no_url:
        wizard.choose_no_url()
        if wizard.needs_public_url:
            raise BadInput(
                "--no-url: your private partner will call this instance, so it needs a "
                f"public URL and {instance.short_name!r} has none: run `{PROG} init "
                f"--short-name {instance.short_name} --public-url URL`, then try again"
            )
    else:
        wizard.set_dest_url(args.url)
        if wizard.needs_check and wizard.require_verified:
            wizard.record_check(_verify(wizard.dest_url))
    # Every field at once, so one run reports every problem.
    wizard.set_mode(args.mode)
    if args.local_name is not None:  # else the wizard's: this instance's short name
        wizard.set_local_name(args.local_name)
    wizard.set_remote_name(args.remote_name)
    if args.name is not None:
        wizard.set_name(args.name)
    if args.description is not None:
        wizard.set_description(args.description)
    _refuse(wizard, args)

    while wizard.step is not Step.INVITATION:
        if not wizard.next():
            _refuse(wizard, args)
            raise RuntimeError(f"the wizard stopped at {wizard.step} without saying why")
    issued = wizard.issued
    assert issued is not None  # INVITATION is reached only by issuing
    if not wizard.saved(save_issued(home, issued.connection, wizard.new_instance)):
        _refuse(wizard, args)  # the name was taken since the wizard was made

    if args.json:
        print_json({"connection": public(issued.connection), "code": issued.code})
    else:
        print(issued.code)
    return 0


def cmd_accept(args: argparse.Namespace, home: Home) -> int:
    from exalate_tui.lifecycle.accept import accept
    from exalate_tui.transport.storage import open_streams
    from exalate_tui.transport.streams import Streams

    text = _read_code(args.code)
    wizard = AcceptWizard(home.load_instance(), home.load_connections().connections)
    wizard.set_code(text)
    if args.short_name is not None:
        wizard.set_local_name(args.short_name)
    if args.name is not None:
        wizard.set_name(args.name)
    # Checked here too, before state.sqlite3 is opened: a refused code writes nothing.
    problems = wizard.problems()
    if problems:
        flags = {"code": "CODE", "local_name": "--short-name", "name": "--name"}
        if "local_name" in problems and args.short_name is None:
            problems["local_name"] += f" Give it with --short-name S, or run `{PROG} init`."
        raise BadInput("\n".join(f"{flags[f]}: {p}" for f, p in problems.items()))
    invite = wizard.invitation
    assert invite is not None  # problems() reports a missing code
    stages: list[Stage] = []

    def progress(stage: Stage) -> None:
        stages.append(stage)
        if args.json:
            return
        if stage is Stage.CONTACTING:
            print(f"Contacting {inert(invite.from_)} at {inert(invite.url)} …")
        elif stage is Stage.ACCEPTED:
            print("Accepted: the connection secret is stored.")
        elif stage is Stage.CONNECTED:
            print("Connected: the first message was delivered.")

    opened: list[Streams] = []

    def open_state() -> Streams:
        # Opened only once there is something to store: a refused accept writes nothing.
        home.ensure()
        opened.append(open_streams(home, hints=False))
        return opened[-1]

    try:
        connection = run_async(
            accept(home, open_state, invite, wizard.local_name, progress, name=wizard.name)
        )
    finally:
        for state in opened:
            state.close()
    if args.json:
        print_json({"connection": public(connection), "stages": stages})
    elif Stage.WAITING in stages:
        print(
            f"Accepted {inert(connection.name)} ({connection.id}): pending until "
            f"{inert(invite.from_)} connects to this instance; keep `{PROG} node` running."
        )
    else:
        print(f"Connection {inert(connection.name)} ({connection.id}) is active.")
    return 0


ARGV_WARNING = (
    "warning: a code given as an argument shows in `ps` to every user of this machine "
    "and stays in your shell history; next time pipe it in (`accept -`) or paste it "
    "when asked (`accept` with no code)"
)


def _read_code(code: str | None) -> str:
    """The code from the argument (with a warning), stdin (`-`), or a prompt in a terminal."""
    if code == "-":
        return sys.stdin.read()
    if code is not None:
        print(f"{PROG} accept: {ARGV_WARNING}", file=sys.stderr)
        return code
    if not sys.stdin.isatty():
        raise BadInput(
            "CODE: no code given: pipe it in with `accept -`, or run `accept` in a terminal "
            "to paste it when asked"
        )
    return _prompt_code()


def _prompt_code() -> str:
    """Read a pasted code, which may come wrapped over several lines: until it is whole
    (it decodes), an empty line, or end of input."""
    from exalate_tui.domain import invitation as codes

    print("Paste the invitation code, then press Enter:", file=sys.stderr)
    lines: list[str] = []
    try:
        while True:
            line = sys.stdin.readline()
            if not line or (not line.strip() and lines):
                break
            lines.append(line)
            try:
                codes.decode("".join(lines))
                break
            except codes.InvitationError:
                continue
    except KeyboardInterrupt:
        print(file=sys.stderr)
        raise BadInput("CODE: no code given (interrupted): nothing was changed") from None
    return "".join(lines)


def _verify(url: str) -> UrlCheck:
    """`GET {url}/api/v1/info`, as the console's step 1 does (httpx loads only here)."""
    from exalate_tui.transport.client import verify_url

    return run_async(verify_url(url))


def _refuse(wizard: InitiateWizard, args: argparse.Namespace) -> None:
    """Raise BadInput naming every flag the wizard refused, if any."""
    if not wizard.errors:
        return
    lines = []
    for field, problem in wizard.errors.items():
        hint = ""
        if field == "name" and args.name is None:
            hint = " The name was made from the two short names: give one with --name NAME."
        if field == "dest_url" and wizard.url_check is not None:
            hint = " (--no-verify skips this check, e.g. before the partner's node is up.)"
        lines.append(f"{FLAGS.get(field, field)}: {problem}{hint}")
    raise BadInput("\n".join(lines))


def register(
    commands: Any, home: argparse.ArgumentParser, home_json: argparse.ArgumentParser
) -> None:
    init = commands.add_parser(
        "init", parents=[home], help="create or update this instance (instance.toml)"
    )
    init.add_argument(
        "--short-name",
        required=True,
        metavar="S",
        help="this instance's short name, as partners see it (e.g. snow)",
    )
    init.add_argument(
        "--public-url",
        metavar="URL",
        help="where partners reach this instance; '' removes it (default: keep)",
    )
    init.add_argument(
        "--database",
        metavar="URL",
        help="keep the message streams in this PostgreSQL database "
        "(postgresql://USER:PASSWORD@HOST:PORT/DATABASE), for several node workers; "
        "'' goes back to state.sqlite3 (default: keep). $EXALATE_TUI_DATABASE_URL overrides it",
    )
    init.set_defaults(run=cmd_init)

    initiate = commands.add_parser(
        "initiate", parents=[home_json], help="initiate a connection, print its invitation code"
    )
    where = initiate.add_mutually_exclusive_group(required=True)
    where.add_argument("--url", metavar="URL", help="the destination instance's URL")
    where.add_argument(
        "--no-url", action="store_true", help="the destination has no URL (it is private)"
    )
    initiate.add_argument(
        "--no-verify",
        action="store_true",
        help="do not check --url against the destination's node (GET /api/v1/info)",
    )
    initiate.add_argument(
        "--mode",
        required=True,
        choices=["basic", "script"],
        help="the configuration type: basic (a fixed mapping of basic fields, issues only) "
        "or script (sync rules each side edits)",
    )
    initiate.add_argument(
        "--local-name",
        metavar="A",
        help="this instance's short name in the connection (default: the one `init` saved)",
    )
    initiate.add_argument(
        "--remote-name",
        required=True,
        metavar="B",
        help="the destination instance's short name",
    )
    initiate.add_argument("--name", metavar="N", help="the connection's name (default: A_to_B)")
    initiate.add_argument(
        "--description", metavar="D", help="what the connection is for (optional)"
    )
    initiate.set_defaults(run=cmd_initiate)

    accept = commands.add_parser(
        "accept", parents=[home_json], help="accept an invitation code from a partner"
    )
    accept.add_argument(
        "code",
        metavar="CODE",
        nargs="?",
        help="- reads the code from stdin; left out in a terminal, it is asked for. A code "
        "given here works too, with a warning: it shows in `ps` and in your shell history",
    )
    accept.add_argument(
        "--short-name", metavar="S", help="this side's short name (default: the instance's)"
    )
    accept.add_argument(
        "--name", metavar="N", help="the connection's name here (default: the code's)"
    )
    accept.set_defaults(run=cmd_accept)
