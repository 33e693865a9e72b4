"""The sync store's deferred writes: read back at once, committed together at the end."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from exalate_tui.sync.store import Link, SyncStore

CID = "c1"


@pytest.fixture
def stores(tmp_path: Path) -> Iterator[tuple[SyncStore, SyncStore]]:
    """The engine's store and another process's look at the same file."""
    engine, other = SyncStore(tmp_path / "state.sqlite3"), SyncStore(tmp_path / "state.sqlite3")
    yield engine, other
    engine.close()
    other.close()


def test_deferred_writes_read_back_at_once_and_commit_together(
    stores: tuple[SyncStore, SyncStore],
) -> None:
    engine, other = stores
    with engine.deferred():
        engine.save_link(Link(CID, "SNOW-1", None, True, "local", created=1.0))
        engine.processed(
            CID,
            1,
            link=Link(CID, "SNOW-2", "JIRA-7", True, "remote", created=2.0),
            stash=("JIRA-8", "ab" * 32, "a.txt", b"bytes"),
        )
        engine.processed(CID, 2, unstash="JIRA-9")
        assert engine.link(CID, "SNOW-1") is not None
        found = engine.link_by_remote(CID, "JIRA-7")
        assert found is not None and found.local_key == "SNOW-2"
        assert engine.stashed(CID, "JIRA-8", "ab" * 32) == b"bytes"
        # Nothing is in the file yet: one transaction at the end.
        assert other.link(CID, "SNOW-1") is None and other.cursor(CID) == 0
    assert [link.local_key for link in other.links(CID)] == ["SNOW-1", "SNOW-2"]
    assert other.cursor(CID) == 2
    assert other.stashed(CID, "JIRA-8", "ab" * 32) == b"bytes"


def test_what_was_done_before_an_error_is_kept(stores: tuple[SyncStore, SyncStore]) -> None:
    engine, other = stores
    with pytest.raises(RuntimeError), engine.deferred():
        engine.processed(CID, 1, link=Link(CID, "SNOW-1", "JIRA-1", True, "remote"))
        raise RuntimeError("the tracker went away")
    assert other.cursor(CID) == 1 and other.link(CID, "SNOW-1") is not None
    engine.save_link(Link(CID, "SNOW-2", None, True, "local"))  # at once again
    assert other.link(CID, "SNOW-2") is not None


def test_an_unstashed_key_has_no_bytes_even_from_an_earlier_batch(
    stores: tuple[SyncStore, SyncStore],
) -> None:
    engine, _ = stores
    engine.processed(CID, 1, stash=("JIRA-1", "cd" * 32, "b.txt", b"old"))
    with engine.deferred():
        engine.processed(CID, 2, unstash="JIRA-1")
        assert engine.stashed(CID, "JIRA-1", "cd" * 32) is None
    assert engine.stashed(CID, "JIRA-1", "cd" * 32) is None
