"""A Script connection's rules on disk: `rules/<connection id>/` (docs/architecture.md).

    rules/<id>/rules.toml            the versions (number, direction, time, note, SHA-256)
                                     and the time limit of one run
    rules/<id>/versions/<n>-<dir>.py every version ever saved, kept as saved
    rules/<id>/outgoing.py           what is in force, to read (a copy of the latest
    rules/<id>/incoming.py           version of that direction)

What is in force is the latest version of each direction in `rules.toml`,
read from `versions/`: a hand edit of `outgoing.py` is never run unchecked.
Versions are numbered per connection, across both directions, so one number
names one version (`rules revert ID N`). Every write is atomic (temp file,
fsync, rename), 0600, under the home's lock; `rules.toml` is written last,
so a version is in force only once its file is whole.

This layer stores text; checking a rule before it is saved is sync/script.py's.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import tomli_w

from exalate_tui.errors import ExalateError
from exalate_tui.home.store import Home, StoreError, _fsync_dir

DIRECTIONS = ("outgoing", "incoming")
DEFAULT_TIME_LIMIT = 1.0
MAX_TIME_LIMIT = 60.0
MAX_RULE = 256 * 1024  # characters: a rule is a page of code, not a data set


class UnknownVersion(ExalateError, LookupError):
    bad_input = True


@dataclass(frozen=True)
class Version:
    number: int
    direction: str
    saved: datetime
    note: str
    sha256: str


def _write(path: Path, data: bytes) -> None:
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


class RuleFiles:
    """The rules of one connection in one home."""

    def __init__(self, home: Home, cid: str) -> None:
        self.home = home
        self.cid = cid
        self.path = home.path / "rules" / cid

    @property
    def index_path(self) -> Path:
        return self.path / "rules.toml"

    def current_path(self, direction: str) -> Path:
        return self.path / f"{direction}.py"

    def version_path(self, version: Version) -> Path:
        return self.path / "versions" / f"{version.number}-{version.direction}.py"

    def stamp(self) -> tuple[int, int, int] | None:
        """Changes whenever a version is saved (each save renames a new index in)."""
        try:
            st = self.index_path.stat()
        except FileNotFoundError:
            return None
        return st.st_ino, st.st_mtime_ns, st.st_size

    def _index(self) -> dict[str, Any]:
        try:
            raw = self.index_path.read_bytes()
        except FileNotFoundError:
            return {}
        try:
            return tomllib.loads(raw.decode())
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as error:
            raise StoreError(self.index_path, f"does not parse ({error}); fix it") from None

    def versions(self) -> list[Version]:
        """Every saved version, oldest first."""
        try:
            return [
                Version(
                    int(v["number"]),
                    str(v["direction"]),
                    v["saved"],
                    str(v.get("note", "")),
                    str(v["sha256"]),
                )
                for v in self._index().get("versions", [])
            ]
        except (KeyError, TypeError, ValueError):
            raise StoreError(
                self.index_path, "a version lacks number, direction, saved or sha256"
            ) from None

    def time_limit(self) -> float:
        limit = self._index().get("time_limit", DEFAULT_TIME_LIMIT)
        return float(limit) if isinstance(limit, int | float) else DEFAULT_TIME_LIMIT

    def current(self) -> dict[str, Version]:
        """The version in force of each direction that has one."""
        return {v.direction: v for v in self.versions()}

    def source(self, version: Version) -> str:
        path = self.version_path(version)
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise StoreError(path, "is missing: revert to another version") from None
        if hashlib.sha256(text.encode()).hexdigest() != version.sha256:
            raise StoreError(path, "was changed after it was saved: revert to another version")
        return text

    def version(self, number: int) -> Version:
        for version in self.versions():
            if version.number == number:
                return version
        raise UnknownVersion(f"VERSION: no version {number} (`rules history` lists them)")

    def _save_index(self, data: dict[str, Any]) -> None:
        _write(self.index_path, tomli_w.dumps(data).encode())

    def save(self, direction: str, source: str, note: str) -> Version:
        """Keep `source` as the next version of `direction`, in force at once."""
        if direction not in DIRECTIONS:
            raise ValueError(direction)
        with self.home.lock():
            return self._save_locked(direction, source, note)

    def _save_locked(self, direction: str, source: str, note: str) -> Version:
        data = self._index()
        versions = list(data.get("versions", []))
        number = max((int(v["number"]) for v in versions), default=0) + 1
        version = Version(
            number,
            direction,
            datetime.now(UTC).replace(microsecond=0),
            note,
            hashlib.sha256(source.encode()).hexdigest(),
        )
        body = source.encode()
        _write(self.version_path(version), body)
        _write(self.current_path(direction), body)
        versions.append(
            {
                "number": number,
                "direction": direction,
                "saved": version.saved,
                "note": note,
                "sha256": version.sha256,
            }
        )
        data["versions"] = versions
        self._save_index(data)
        return version

    def ensure(self, defaults: Mapping[str, str], note: str) -> bool:
        """Write `defaults` as the first versions when there are none; True if written."""
        if self.current().keys() >= set(DIRECTIONS):
            return False
        with self.home.lock():
            have = self.current()
            written = False
            for direction in DIRECTIONS:
                if direction not in have:
                    self._save_locked(direction, defaults[direction], note)
                    written = True
            return written

    def set_time_limit(self, seconds: float) -> None:
        with self.home.lock():
            data = self._index()
            data["time_limit"] = float(seconds)
            self._save_index(data)
