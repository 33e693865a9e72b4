"""The home folder: `instance.toml` and `connections/<id>.toml` (DESIGN.md, contract).

Every write is atomic (temp file, fsync, rename) and serialized by an
exclusive lock on `<home>/.lock`, so the console and the node can share a
home. A file that does not parse is reported with its path and line and is
never overwritten.
"""

from __future__ import annotations

import fcntl
import os
import re
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import tomli_w

from exalate_tui.domain import models
from exalate_tui.domain.models import (
    CONNECTION_NAME_MAX,
    DESCRIPTION_MAX,
    Mode,
    PeerState,
    Role,
    Status,
    Topology,
    check_short_name,
    check_text,
    check_url,
)

# pydantic loads with the first model used (`models`): the console's first screen
# reads the files without it (`Home.glance`).
if TYPE_CHECKING:
    from pydantic import BaseModel

    from exalate_tui.domain.models import Connection, Instance

HOME_ENV = "EXALATE_TUI_HOME"
_POSITION = re.compile(r"\s*\(at line (\d+), column \d+\)")
_AT_END = "(at end of document)"
APP_NAME = "exalate-tui"


class StoreError(Exception):
    """A file in the home that cannot be used; str() names the file and the fix."""

    def __init__(self, path: Path, message: str, line: int | None = None) -> None:
        self.path = path
        self.line = line
        self.message = message
        where = f"{path}:{line}" if line else str(path)
        super().__init__(f"{where}: {message}")


class NotFound(LookupError):
    """No connection matches the given id."""


class NameTaken(ValueError):
    """Another connection in this home already has that name."""


def default_home() -> Path:
    env = os.environ.get(HOME_ENV)
    if env:
        return Path(env).expanduser()
    from platformdirs import user_config_dir

    return Path(user_config_dir(APP_NAME, appauthor=False))


def _dump(model: BaseModel) -> dict[str, Any]:
    """A model as TOML-ready data: no None (TOML has no null), secrets revealed."""
    from pydantic import SecretStr

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


# One line as tomli-w writes this store's files: a bare key, then a basic string with
# nothing to unescape, a date-time to the second with its offset, or a plain integer.
_PLAIN_LINE = re.compile(
    r'([A-Za-z0-9_-]+) = (?:"([^"\\\x00-\x08\x0a-\x1f\x7f]*)"'
    r"|(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(?:Z|[+-]\d\d:\d\d))|(0|[1-9]\d{0,17}))"
)


def _plain_toml(text: str) -> dict[str, Any] | None:
    """What tomllib reads from `text` when every line is a `_PLAIN_LINE`, else None.

    tomllib is pure Python: ~0.5 ms a file, and its import ~1.5 ms. The files this
    store writes are all such lines; anything else is left to tomllib.
    """
    data: dict[str, Any] = {}
    lines = text.split("\n")
    if lines[-1] == "":
        lines.pop()
    for line in lines:
        found = _PLAIN_LINE.fullmatch(line)
        if found is None:
            return None
        key, string, moment, number = found.groups()
        if key in data:
            return None
        if string is not None:
            data[key] = string
        elif moment is not None:
            try:
                data[key] = datetime.fromisoformat(moment)
            except ValueError:
                return None
        else:
            data[key] = int(number)
    return data


def _read_toml(path: Path, raw: bytes) -> dict[str, Any]:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise StoreError(path, "is not UTF-8 text; fix or remove the file") from None
    plain = _plain_toml(text)
    if plain is not None:
        return plain
    import tomllib

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
    from pydantic import ValidationError

    try:
        return model.model_validate(data)
    except ValidationError as error:
        first = error.errors()[0]
        key = ".".join(str(p) for p in first["loc"]) or "file"
        raise StoreError(path, f"key {key!r}: {first['msg']}; fix or remove the file") from None


def _write_atomic(path: Path, data: dict[str, Any], mode: int) -> None:
    # Not tempfile.mkstemp: tempfile imports shutil, bz2, lzma and random, ~3 ms of a
    # headless command's start-up (benchmarks/README.md). O_EXCL gives the same guarantee.
    temp = path.parent / f".{path.name}.{os.urandom(6).hex()}.tmp"
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
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


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@dataclass
class Loaded:
    """Every connection that parsed, and a problem for each file that did not."""

    connections: list[Connection] = field(default_factory=list)
    problems: list[StoreError] = field(default_factory=list)


# Every key each file may hold: the models' fields (tests/test_store.py keeps them equal).
INSTANCE_KEYS = frozenset({"short_name", "public_url", "listen_host", "listen_port"})
CONNECTION_KEYS = frozenset(
    {
        "id",
        "name",
        "description",
        "mode",
        "topology",
        "role",
        "local_name",
        "remote_name",
        "remote_url",
        "created",
        "status",
        "token_hash",
        "token",
        "token_expires",
        "code_digest",
        "secret",
        "peer_state",
    }
)
_REQUIRED_TEXT = ("id", "name", "mode", "topology", "role", "local_name")
_OPTIONAL_TEXT = (
    "description",
    "remote_name",
    "remote_url",
    "status",
    "token_hash",
    "token",
    "code_digest",
    "secret",
    "peer_state",
)
_DIGEST = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class Listed:
    """What the Connections tab shows of one connection file, read without pydantic."""

    id: str
    name: str
    local_name: str
    remote_name: str | None
    mode: Mode
    topology: Topology
    status: Status
    peer_state: PeerState | None
    created: datetime


@dataclass(frozen=True)
class Glance:
    """The home read without pydantic, for the console's first screen (`Home.glance`)."""

    instance_path: Path
    instance_data: dict[str, Any]
    connections: list[Listed]
    # Files that are not UTF-8 TOML, reported as `load_connections` reports them.
    problems: list[StoreError]

    @property
    def short_name(self) -> str:
        name: str = self.instance_data["short_name"]
        return name

    @property
    def public_url(self) -> str | None:
        url: str | None = self.instance_data.get("public_url")
        return url

    def instance(self) -> Instance:
        """`instance.toml` as read for the glance, as the model (pydantic loads here)."""
        instance: Instance = _validate(self.instance_path, self.instance_data, models.Instance)
        return instance


def _read_file(path: Path) -> dict[str, Any]:
    with open(path, "rb") as file:
        return _read_toml(path, file.read())


def _plain_instance(data: dict[str, Any]) -> bool:
    """True only for data `Instance` accepts as it is (False: let pydantic judge it)."""
    if not data.keys() <= INSTANCE_KEYS:
        return False
    port = data.get("listen_port", 7917)
    if type(port) is not int or not 0 < port < 65536:
        return False
    if not isinstance(data.get("listen_host", ""), str):
        return False
    try:
        check_short_name(data["short_name"])
        if "public_url" in data:
            check_url(data["public_url"])
    except (KeyError, TypeError, ValueError):
        return False
    return True


def _plain_connection(data: dict[str, Any]) -> Listed | None:
    """The row for data `Connection` accepts as it is; None: let pydantic judge it.

    Stricter than the model on purpose (types exactly as tomli-w writes them,
    `created` with its offset): anything else goes the model's way.
    """
    if not data.keys() <= CONNECTION_KEYS:
        return None
    created = data.get("created")
    if not isinstance(created, datetime) or created.tzinfo is None:
        return None
    if "token_expires" in data and not isinstance(data["token_expires"], datetime):
        return None
    if any(type(data.get(key)) is not str for key in _REQUIRED_TEXT):
        return None
    if any(key in data and type(data[key]) is not str for key in _OPTIONAL_TEXT):
        return None
    if "code_digest" in data and not _DIGEST.fullmatch(data["code_digest"]):
        return None
    remote_name = data.get("remote_name")
    peer_state = data.get("peer_state")
    try:
        check_text(data["name"], limit=CONNECTION_NAME_MAX, required=True)
        check_text(data.get("description", ""), limit=DESCRIPTION_MAX, required=False)
        check_short_name(data["local_name"])
        if remote_name is not None:
            check_short_name(remote_name)
        if "remote_url" in data:
            check_url(data["remote_url"])
        Role(data["role"])
        return Listed(
            id=data["id"],
            name=data["name"],
            local_name=data["local_name"],
            remote_name=remote_name,
            mode=Mode(data["mode"]),
            topology=Topology(data["topology"]),
            status=Status(data.get("status", Status.PENDING)),
            peer_state=None if peer_state is None else PeerState(peer_state),
            created=created,
        )
    except ValueError:
        return None


@dataclass(frozen=True)
class Home:
    path: Path

    @classmethod
    def resolve(cls, override: str | os.PathLike[str] | None = None) -> Home:
        return cls(Path(override).expanduser() if override else default_home())

    @property
    def instance_path(self) -> Path:
        return self.path / "instance.toml"

    @property
    def connections_dir(self) -> Path:
        return self.path / "connections"

    @property
    def state_path(self) -> Path:
        return self.path / "state.sqlite3"

    def connection_path(self, cid: str) -> Path:
        return self.connections_dir / f"{cid}.toml"

    def ensure(self) -> None:
        """Create the home (0700) and its connections folder."""
        self.path.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.connections_dir.mkdir(mode=0o700, exist_ok=True)

    def permission_warnings(self) -> list[str]:
        """Files others can read though they hold secrets: one line each, with the fix."""
        checks = [(self.path, 0o700), (self.connections_dir, 0o700)]
        checks += [(p, 0o600) for p in (self.instance_path, self.state_path)]
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

    def glance(self) -> Glance | None:
        """The home as the Connections tab first shows it, read without pydantic.

        None when `instance.toml` is missing or any file holds something only
        the models can judge: the caller then loads the home the usual way,
        which says exactly what is wrong. Otherwise the glance holds what the
        models would give, field for field, ~100 ms sooner (no pydantic).
        """
        try:
            instance = _read_file(self.instance_path)
        except (OSError, StoreError):
            return None
        if not _plain_instance(instance):
            return None
        listed: list[Listed] = []
        problems: list[StoreError] = []
        if self.connections_dir.is_dir():
            for path in sorted(self.connections_dir.glob("*.toml")):
                try:
                    entry = _plain_connection(_read_file(path))
                except StoreError as problem:
                    problems.append(problem)
                    continue
                except FileNotFoundError:
                    continue  # deleted by another process while listing
                if entry is None:
                    return None
                listed.append(entry)
        listed.sort(key=lambda c: (c.created, c.name))
        return Glance(self.instance_path, instance, listed, problems)

    # -- instance -----------------------------------------------------------

    def load_instance(self) -> Instance | None:
        if not self.instance_path.exists():
            return None
        instance: Instance = _parse(self.instance_path, models.Instance)
        return instance

    def save_instance(self, instance: Instance) -> None:
        with self.lock():
            if self.instance_path.exists():
                _parse(self.instance_path, models.Instance)  # never overwrite a broken file
            _write_atomic(self.instance_path, _dump(instance), 0o600)

    # -- connections --------------------------------------------------------

    def load_connections(self) -> Loaded:
        loaded = Loaded()
        if not self.connections_dir.is_dir():
            return loaded
        for path in sorted(self.connections_dir.glob("*.toml")):
            try:
                loaded.connections.append(_parse(path, models.Connection))
            except StoreError as problem:
                loaded.problems.append(problem)
            except FileNotFoundError:
                continue  # deleted by another process while listing
        loaded.connections.sort(key=lambda c: (c.created, c.name))
        return loaded

    def get_connection(self, cid: str) -> Connection:
        """By full id or a unique prefix of it (as `git` takes commit ids)."""
        if not cid:
            raise NotFound("no connection id given; see `exalate-tui connections`")
        if _glob_safe(cid) != cid:
            # Not an id: a path ("../instance") or a pattern ("*") must never reach a file.
            raise NotFound(f"no connection with id {cid!r}; see `exalate-tui connections`")
        path = self.connection_path(cid)
        if not path.exists():
            matches = [p for p in self.connections_dir.glob(f"{_glob_safe(cid)}*.toml")]
            if len(matches) > 1:
                raise NotFound(f"{cid!r} matches {len(matches)} connections: give more of the id")
            if not matches:
                raise NotFound(f"no connection with id {cid!r}; see `exalate-tui connections`")
            path = matches[0]
        connection: Connection = _parse(path, models.Connection)
        return connection

    def save_connection(self, connection: Connection) -> None:
        """Create or replace; refuses a name another connection already has."""
        with self.lock():
            self._check_name_free(connection)
            path = self.connection_path(connection.id)
            if path.exists():
                _parse(path, models.Connection)  # never overwrite a broken file
            _write_atomic(path, _dump(connection), 0o600)

    def update_connection(
        self, cid: str, change: Callable[[Connection], Connection | None]
    ) -> Connection:
        """Read, change and write one connection under the lock."""
        with self.lock():
            copy = self.get_connection(cid).model_copy(deep=True)
            # None means "changed in place": the copy is what was changed.
            updated = change(copy) or copy
            _write_atomic(self.connection_path(updated.id), _dump(updated), 0o600)
            return updated

    def delete_connection(self, cid: str) -> Connection:
        with self.lock():
            connection = self.get_connection(cid)
            self.connection_path(connection.id).unlink()
            _fsync_dir(self.connections_dir)
            return connection

    # -- tombstones: deleted connections a polling partner has yet to hear about --

    @property
    def tombstones_dir(self) -> Path:
        return self.path / "tombstones"

    def tombstone_path(self, cid: str) -> Path:
        return self.tombstones_dir / f"{cid}.toml"

    def bury_connection(self, cid: str) -> Connection:
        """Delete a connection, keeping it in `tombstones/` (docs/protocol.md, Deleting).

        Nothing that lists connections sees it any more; the node still answers
        the partner's polls with it until the partner has fetched
        `connection.deleted`. The tombstone's mtime is the time of deletion.
        """
        with self.lock():
            connection = self.get_connection(cid)
            self.tombstones_dir.mkdir(mode=0o700, exist_ok=True)
            _write_atomic(self.tombstone_path(connection.id), _dump(connection), 0o600)
            self.connection_path(connection.id).unlink()
            _fsync_dir(self.connections_dir)
            return connection

    def get_tombstone(self, cid: str) -> Connection | None:
        """A buried connection by its full id (no prefixes here), or None."""
        if not cid or _glob_safe(cid) != cid:
            return None
        try:
            connection: Connection = _parse(self.tombstone_path(cid), models.Connection)
        except FileNotFoundError:
            return None
        return connection

    def tombstones(self) -> list[tuple[str, float]]:
        """The id of every buried connection and when it was deleted (Unix seconds)."""
        found = []
        for path in sorted(self.tombstones_dir.glob("*.toml")):
            try:
                found.append((path.stem, path.stat().st_mtime))
            except FileNotFoundError:
                continue  # dropped by another process while listing
        return found

    def drop_tombstone(self, cid: str) -> None:
        if not cid or _glob_safe(cid) != cid:
            return
        with self.lock():
            self.tombstone_path(cid).unlink(missing_ok=True)

    def name_taken(self, name: str, *, except_id: str | None = None) -> bool:
        wanted = name.casefold()
        return any(
            c.name.casefold() == wanted and c.id != except_id
            for c in self.load_connections().connections
        )

    def _check_name_free(self, connection: Connection) -> None:
        if self.name_taken(connection.name, except_id=connection.id):
            raise NameTaken(f"a connection named {connection.name!r} already exists")


def _glob_safe(text: str) -> str:
    return "".join(ch for ch in text if ch.isalnum() or ch == "-")
