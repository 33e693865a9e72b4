"""The home folder: `instance.toml` and `connections/<id>.toml` (README.md, "Where files live").

Every write is atomic (temp file, fsync, rename) and serialized by an
exclusive lock on `<home>/.lock`, so the console and the node can share a
home. A file that does not parse is reported with its path and line and is
never overwritten.

The connections (and their tombstones) live behind one small interface,
`ConnectionStore`: `FileConnections`, the files of the home, by default; a
home that chose PostgreSQL is handed the database's own by
`transport/storage.py` (`Home.opener`), so every caller of `Home`'s
connection methods works unchanged on either.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import tempfile
import threading
import time
import tomllib
from collections.abc import Callable, Hashable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

import tomli_w
from platformdirs import user_config_dir
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError

from exalate_tui.domain.models import Connection, Instance, TrackerConfig
from exalate_tui.errors import ExalateError

HOME_ENV = "EXALATE_TUI_HOME"
_POSITION = re.compile(r"\s*\(at line (\d+), column \d+\)")
_AT_END = "(at end of document)"
APP_NAME = "exalate-tui"


class StoreError(ExalateError):
    """A file in the home that cannot be used; str() names the file and the fix."""

    def __init__(self, path: Path, message: str, line: int | None = None) -> None:
        self.path = path
        self.line = line
        self.message = message
        where = f"{path}:{line}" if line else str(path)
        super().__init__(f"{where}: {message}")


class NotFound(ExalateError, LookupError):
    """No connection matches the given id."""

    bad_input = True


class NameTaken(ExalateError, ValueError):
    """Another connection in this home already has that name."""

    bad_input = True


def default_home() -> Path:
    env = os.environ.get(HOME_ENV)
    if env:
        return Path(env).expanduser()
    return Path(user_config_dir(APP_NAME, appauthor=False))


def _dump(model: BaseModel) -> dict[str, Any]:
    """A model as TOML-ready data: no None (TOML has no null), secrets revealed."""
    data: dict[str, Any] = {}
    for name, value in model:
        if value is None:
            continue
        if isinstance(value, SecretStr):
            value = value.get_secret_value()
        data[name] = value
    return data


# Parsed files by path, with the (inode, size, mtime) they were read at. A node
# with 10,000 connections reads every file on each rescan (every 3 s) and on
# every signed request: 1.2 s of CPU per rescan without this, ~50 ms with it.
_PARSED: dict[tuple[Path, type[BaseModel]], tuple[tuple[int, int, int], BaseModel]] = {}
# A file changed in place within one tick of the kernel's coarse clock keeps
# its mtime: only files older than this are trusted to change their key.
_SETTLED = 0.05


def _key(stat: os.stat_result) -> tuple[int, int, int]:
    return stat.st_ino, stat.st_size, stat.st_mtime_ns


def _parse(path: Path, model: type[BaseModel]) -> Any:
    cached = _PARSED.get((path, model))
    if cached is not None and cached[0] == _key(os.stat(path)):
        return cached[1].model_copy()  # callers change their copy, never the cache
    with open(path, "rb") as file:
        stat = os.fstat(file.fileno())  # the key of exactly what is read
        key = _key(stat)
        raw = file.read()
    parsed = _parse_text(path, raw, model)
    if time.time() - stat.st_mtime > _SETTLED:
        _PARSED[path, model] = (key, parsed.model_copy())
    return parsed


def _parse_text(path: Path, raw: bytes, model: type[BaseModel]) -> Any:
    return _validate(path, _read_toml(path, raw), model)


def _read_toml(path: Path, raw: bytes) -> dict[str, Any]:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise StoreError(path, "is not UTF-8 text; fix or remove the file") from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        # Python < 3.14 puts the position only in the message: "... (at line 2, column 8)".
        found = _POSITION.search(str(error))
        line = int(found.group(1)) if found else None
        if _AT_END in str(error):
            # The last line with content: a file cut short ends there, not on a blank line.
            line = len(text.rstrip().splitlines()) or 1
        reason = _POSITION.sub("", str(error)).replace(_AT_END, "").strip()
        raise StoreError(
            path, f"is not valid TOML ({reason}); fix or remove the file", line
        ) from None


def _validate(path: Path, data: dict[str, Any], model: type[BaseModel]) -> Any:
    try:
        return model.model_validate(data)
    except ValidationError as error:
        first = error.errors()[0]
        key = ".".join(str(p) for p in first["loc"]) or "file"
        raise StoreError(path, f"key {key!r}: {first['msg']}; fix or remove the file") from None


def _write_atomic(path: Path, data: dict[str, Any], mode: int) -> None:
    # Beside the target, so the rename stays on one file system; created 0600.
    fd, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as file:
            tomli_w.dump(data, file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def create_private(path: Path) -> None:
    """Make `path` an empty 0600 file if it does not exist yet, and leave it 0600.

    For a SQLite file, before SQLite opens it: SQLite makes its -wal and -shm
    with the file's mode. An existing file is never opened here: closing any
    descriptor of a file drops every POSIX lock this process holds on it,
    SQLite's included, and another process would then take itself for the
    last user and delete the WAL under this one.
    """
    with contextlib.suppress(FileExistsError):
        os.close(os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600))
    path.chmod(0o600)


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class NodeRecord(BaseModel):
    """`node.pid`: written by a node once its socket is bound, removed when it stops."""

    # Built when first used: most commands never read node.pid (benchmarks/README.md, headless).
    model_config = ConfigDict(extra="ignore", defer_build=True)

    pid: int = Field(gt=0)
    host: str
    port: int = Field(ge=0, le=65535)
    started: datetime
    version: str

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"


@dataclass
class Loaded:
    """Every connection that parsed, and a problem for each file that did not."""

    connections: list[Connection] = field(default_factory=list)
    problems: list[StoreError] = field(default_factory=list)


@dataclass(frozen=True)
class Home:
    path: Path
    # Opens the home's connection store when first used: None for its files
    # (`FileConnections`); transport/storage.py's `connection_store` for a home that
    # may have chosen a database (every command, the node and the console get it).
    opener: Callable[[Home], ConnectionStore] | None = field(
        default=None, compare=False, repr=False
    )

    @classmethod
    def resolve(
        cls,
        override: str | os.PathLike[str] | None = None,
        opener: Callable[[Home], ConnectionStore] | None = None,
    ) -> Home:
        return cls(Path(override).expanduser() if override else default_home(), opener)

    @property
    def instance_path(self) -> Path:
        return self.path / "instance.toml"

    @property
    def connections_dir(self) -> Path:
        return self.path / "connections"

    @property
    def state_path(self) -> Path:
        return self.path / "state.sqlite3"

    @property
    def tracker_path(self) -> Path:
        """The embedded tracker's tickets (trackers/embedded.py)."""
        return self.path / "tracker.sqlite3"

    @property
    def tracker_config_path(self) -> Path:
        """Which tracker the instance fronts, and ServiceNow's settings (0600)."""
        return self.path / "tracker.toml"

    @property
    def attachments_dir(self) -> Path:
        """The embedded tracker's attachment bytes, one file per SHA-256."""
        return self.path / "attachments"

    @property
    def database_key_path(self) -> Path:
        """`database.key`: the key of the connections' secrets in a database (0600)."""
        return self.path / "database.key"

    def connection_path(self, cid: str) -> Path:
        return self.connections_dir / f"{cid}.toml"

    @property
    def node_pid_path(self) -> Path:
        """`node.pid`: the running node's pid, address, start and version (NodeRecord)."""
        return self.path / "node.pid"

    @property
    def node_log_path(self) -> Path:
        """`node.log`: the output of the node `exalate-tui node start` runs in the background."""
        return self.path / "node.log"

    @property
    def node_lock_path(self) -> Path:
        """Held (flock) by the node serving this home for as long as it runs."""
        return self.path / "locks" / "node.lock"

    def ensure(self) -> None:
        """Create the home (0700) and its connections folder."""
        self.path.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.connections_dir.mkdir(mode=0o700, exist_ok=True)

    def permission_warnings(self) -> list[str]:
        """Files others can read though they hold secrets: one line each, with the fix."""
        checks = [(self.path, 0o700), (self.connections_dir, 0o700), (self.attachments_dir, 0o700)]
        files = (self.instance_path, self.state_path, self.tracker_path, self.tracker_config_path)
        checks += [(p, 0o600) for p in (*files, self.node_pid_path, self.node_log_path)]
        checks.append((self.database_key_path, 0o600))
        if self.connections_dir.is_dir():
            checks += [(p, 0o600) for p in sorted(self.connections_dir.glob("*.toml"))]
        warnings = []
        for path, wanted in checks:
            try:
                mode = path.stat().st_mode & 0o777
            except FileNotFoundError:
                continue
            if mode & ~wanted:
                warnings.append(
                    f"{path} is readable by others (mode {mode:o}): run chmod {wanted:o} {path}"
                )
        return warnings

    @contextmanager
    def lock(self) -> Iterator[None]:
        """Exclusive across processes and threads (one open file each time)."""
        self.ensure()
        with open(self.path / ".lock", "a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    # -- instance -----------------------------------------------------------

    def load_instance(self) -> Instance | None:
        if not self.instance_path.exists():
            return None
        instance: Instance = _parse(self.instance_path, Instance)
        return instance

    def save_instance(self, instance: Instance) -> None:
        with self.lock():
            if self.instance_path.exists():
                _parse(self.instance_path, Instance)  # never overwrite a broken file
            _write_atomic(self.instance_path, _dump(instance), 0o600)

    # -- the tracker ----------------------------------------------------------

    def load_tracker_config(self) -> TrackerConfig:
        """`tracker.toml`, or the embedded tracker's defaults when there is none."""
        if not self.tracker_config_path.exists():
            return TrackerConfig()
        config: TrackerConfig = _parse(self.tracker_config_path, TrackerConfig)
        return config

    def save_tracker_config(self, config: TrackerConfig) -> None:
        self.ensure()
        with self.lock():
            _write_atomic(self.tracker_config_path, _dump(config), 0o600)

    # -- the node's record ---------------------------------------------------

    def load_node_record(self) -> NodeRecord | None:
        """`node.pid` as the node wrote it, or None when there is none."""
        try:
            record: NodeRecord = _parse(self.node_pid_path, NodeRecord)
        except FileNotFoundError:
            return None
        return record

    def save_node_record(self, record: NodeRecord) -> None:
        _write_atomic(self.node_pid_path, _dump(record), 0o600)

    def drop_node_record(self) -> None:
        self.node_pid_path.unlink(missing_ok=True)

    # -- connections: through the home's ConnectionStore ---------------------

    @property
    def connections(self) -> ConnectionStore:
        """Where this home's connections live, opened when first used (`opener`)."""
        store = self.__dict__.get("_connections")
        if store is None:
            with _OPENING:
                store = self.__dict__.get("_connections")
                if store is None:
                    store = (self.opener or FileConnections)(self)
                    # Frozen, so past __setattr__: a cache, not a field (not compared).
                    object.__setattr__(self, "_connections", store)
        assert store is not None
        return store

    def close(self) -> None:
        """Close the connection store if one was opened (a database's pool)."""
        store = self.__dict__.pop("_connections", None)
        if store is not None:
            store.close()

    def load_connections(self) -> Loaded:
        return self.connections.load()

    def parsed_connection(self, cid: str) -> Connection | None:
        """Exactly this id's connection as last read, if the store can tell at no cost
        that it is unchanged since (files: one stat, no read), else None: the node then
        checks a poll's signature with no thread hop, whose return waits behind every
        ready socket in a flood (docs/reliability.md, promise 13)."""
        return self.connections.parsed(cid)

    def get_connection(self, cid: str) -> Connection:
        """By full id or a unique prefix of it (as `git` takes commit ids)."""
        return self.connections.get(cid)

    def find_connection(self, cid: str) -> Connection | None:
        """Exactly this id's connection, or None (no prefixes)."""
        return self.connections.find(cid)

    def save_connection(self, connection: Connection) -> None:
        """Create or replace; refuses a name another connection already has."""
        self.connections.save(connection)

    def update_connection(
        self, cid: str, change: Callable[[Connection], Connection | None]
    ) -> Connection:
        """Read, change and write one connection atomically."""
        return self.connections.update(cid, change)

    def delete_connection(self, cid: str) -> Connection:
        return self.connections.delete(cid)

    def bury_connection(self, cid: str) -> Connection:
        """Delete a connection, keeping it as a tombstone (docs/protocol.md, Deleting)."""
        return self.connections.bury(cid)

    def get_tombstone(self, cid: str) -> Connection | None:
        """A buried connection by its full id (no prefixes here), or None."""
        return self.connections.get_tombstone(cid)

    def tombstones(self) -> list[tuple[str, float]]:
        """The id of every buried connection and when it was deleted (Unix seconds)."""
        return self.connections.tombstones()

    def drop_tombstone(self, cid: str) -> None:
        self.connections.drop_tombstone(cid)

    def name_taken(self, name: str, *, except_id: str | None = None) -> bool:
        return self.connections.name_taken(name, except_id=except_id)

    # -- tombstones' files -----------------------------------------------------

    @property
    def tombstones_dir(self) -> Path:
        return self.path / "tombstones"

    def tombstone_path(self, cid: str) -> Path:
        return self.tombstones_dir / f"{cid}.toml"


# Opening a home's connection store happens once, whichever thread asks first.
_OPENING = threading.Lock()


class ConnectionStore(Protocol):
    """Where a home's connections and tombstones live: `FileConnections` (the files of
    the home), or the database's (transport/pg_connections.py). Both pass one contract
    suite (tests/home/connections_contract.py).

    Every write is atomic; `save` and `update` refuse a name another live connection
    has (case folded) with `NameTaken`, atomically against every other writer; an
    unknown id is `NotFound`; a connection that cannot be read is a `StoreError`
    naming it (`load` lists it among its problems instead).
    """

    # What to name in a message: the folder, or the database and its table.
    where: str

    def load(self) -> Loaded: ...

    def parsed(self, cid: str) -> Connection | None:
        """This id's connection as last read, when that is known at no cost to be its
        current state (no I/O but a stat); None otherwise (then `find`)."""
        ...

    def get(self, cid: str) -> Connection:
        """By full id or a unique prefix of it."""
        ...

    def find(self, cid: str) -> Connection | None:
        """Exactly this id's, or None."""
        ...

    def save(self, connection: Connection) -> None: ...

    def update(self, cid: str, change: Callable[[Connection], Connection | None]) -> Connection:
        """Read, `change` and write one connection, no other write in between."""
        ...

    def delete(self, cid: str) -> Connection: ...

    def bury(self, cid: str) -> Connection:
        """Delete, keeping a tombstone of it (its deletion time)."""
        ...

    def get_tombstone(self, cid: str) -> Connection | None: ...

    def tombstones(self) -> list[tuple[str, float]]: ...

    def drop_tombstone(self, cid: str) -> None: ...

    def name_taken(self, name: str, *, except_id: str | None = None) -> bool: ...

    def stamp(self) -> int | None:
        """Cheap (a stat, a row's read); moves whenever a write of this store changes a
        connection. Polled by the node's supervisor and the sync engine."""
        ...

    def settled(self, stamp: int | None) -> bool:
        """Whether a later write is sure to move `stamp` (a file's mtime may not move
        for a write within one tick of the file system's clock: read again until it
        has settled)."""
        ...

    def signature(self) -> Hashable:
        """Changes with any change at all, a file edited by hand included; the console's
        Connections tab polls it (files: a stat per file)."""
        ...

    def close(self) -> None: ...


class FileConnections:
    """`connections/<id>.toml` and `tombstones/<id>.toml` in the home (0600 each)."""

    def __init__(self, home: Home) -> None:
        self.home = home
        self.where = str(home.connections_dir)

    def close(self) -> None:
        pass

    def load(self) -> Loaded:
        loaded = Loaded()
        if not self.home.connections_dir.is_dir():
            return loaded
        for path in sorted(self.home.connections_dir.glob("*.toml")):
            try:
                loaded.connections.append(_parse(path, Connection))
            except StoreError as problem:
                loaded.problems.append(problem)
            except FileNotFoundError:
                continue  # deleted by another process while listing
        loaded.connections.sort(key=lambda c: (c.created, c.name))
        return loaded

    def parsed(self, cid: str) -> Connection | None:
        """As last parsed, if its file is unchanged since (one stat, no read)."""
        path = self.home.connection_path(cid)
        cached = _PARSED.get((path, Connection))
        if cached is None:
            return None
        try:
            unchanged = cached[0] == _key(os.stat(path))
        except OSError:
            return None
        parsed = cached[1]
        assert isinstance(parsed, Connection)
        return parsed.model_copy() if unchanged else None

    def get(self, cid: str) -> Connection:
        if not cid:
            raise NotFound("no connection id given; see `exalate-tui connections`")
        if _glob_safe(cid) != cid:
            # Not an id: a path ("../instance") or a pattern ("*") must never reach a file.
            raise NotFound(f"no connection with id {cid!r}; see `exalate-tui connections`")
        path = self.home.connection_path(cid)
        if not path.exists():
            matches = [p for p in self.home.connections_dir.glob(f"{_glob_safe(cid)}*.toml")]
            if len(matches) > 1:
                raise NotFound(f"{cid!r} matches {len(matches)} connections: give more of the id")
            if not matches:
                raise NotFound(f"no connection with id {cid!r}; see `exalate-tui connections`")
            path = matches[0]
        connection: Connection = _parse(path, Connection)
        return connection

    def find(self, cid: str) -> Connection | None:
        if not cid or _glob_safe(cid) != cid:
            return None
        try:
            connection: Connection = _parse(self.home.connection_path(cid), Connection)
        except FileNotFoundError:
            return None
        return connection

    def save(self, connection: Connection) -> None:
        with self.home.lock():
            self._check_name_free(connection)
            path = self.home.connection_path(connection.id)
            if path.exists():
                _parse(path, Connection)  # never overwrite a broken file
            _write_atomic(path, _dump(connection), 0o600)

    def update(self, cid: str, change: Callable[[Connection], Connection | None]) -> Connection:
        with self.home.lock():
            current = self.get(cid)
            copy = current.model_copy(deep=True)
            # None means "changed in place": the copy is what was changed.
            updated = change(copy) or copy
            if updated.name.casefold() != current.name.casefold():
                self._check_name_free(updated)  # as a database's unique name refuses it
            _write_atomic(self.home.connection_path(updated.id), _dump(updated), 0o600)
            return updated

    def delete(self, cid: str) -> Connection:
        with self.home.lock():
            connection = self.get(cid)
            self.home.connection_path(connection.id).unlink()
            _fsync_dir(self.home.connections_dir)
            return connection

    def bury(self, cid: str) -> Connection:
        """Into `tombstones/`: nothing that lists connections sees it any more; the node
        still answers the partner's polls with it until the partner has fetched
        `connection.deleted`. The tombstone's mtime is the time of deletion."""
        with self.home.lock():
            connection = self.get(cid)
            self.home.tombstones_dir.mkdir(mode=0o700, exist_ok=True)
            _write_atomic(self.home.tombstone_path(connection.id), _dump(connection), 0o600)
            self.home.connection_path(connection.id).unlink()
            _fsync_dir(self.home.connections_dir)
            return connection

    def get_tombstone(self, cid: str) -> Connection | None:
        if not cid or _glob_safe(cid) != cid:
            return None
        try:
            connection: Connection = _parse(self.home.tombstone_path(cid), Connection)
        except FileNotFoundError:
            return None
        return connection

    def tombstones(self) -> list[tuple[str, float]]:
        found = []
        for path in sorted(self.home.tombstones_dir.glob("*.toml")):
            try:
                found.append((path.stem, path.stat().st_mtime))
            except FileNotFoundError:
                continue  # dropped by another process while listing
        return found

    def drop_tombstone(self, cid: str) -> None:
        if not cid or _glob_safe(cid) != cid:
            return
        with self.home.lock():
            self.home.tombstone_path(cid).unlink(missing_ok=True)

    def name_taken(self, name: str, *, except_id: str | None = None) -> bool:
        wanted = name.casefold()
        return any(
            c.name.casefold() == wanted and c.id != except_id for c in self.load().connections
        )

    def _check_name_free(self, connection: Connection) -> None:
        if self.name_taken(connection.name, except_id=connection.id):
            raise NameTaken(f"a connection named {connection.name!r} already exists")

    def stamp(self) -> int | None:
        """The folder's mtime: each write is a rename into it or an unlink from it."""
        try:
            return self.home.connections_dir.stat().st_mtime_ns
        except FileNotFoundError:
            return None

    def settled(self, stamp: int | None) -> bool:
        return stamp is None or time.time_ns() - stamp > 1_000_000_000

    def signature(self) -> Hashable:
        """(file name, mtime in ns, size) of every connection file."""
        entries: list[tuple[str, int, int]] = []
        try:
            with os.scandir(self.home.connections_dir) as listing:
                for entry in listing:
                    if entry.name.endswith(".toml"):
                        st = entry.stat()
                        entries.append((entry.name, st.st_mtime_ns, st.st_size))
        except FileNotFoundError:
            pass
        return tuple(sorted(entries))


def _glob_safe(text: str) -> str:
    return "".join(ch for ch in text if ch.isalnum() or ch == "-")
