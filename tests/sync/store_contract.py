"""The sync store's contract: what every `SyncStore` keeps (exalate_tui/sync/store.py), as
the engine, the CLI and the console rely on it. `SqliteSyncStore` and `PgSyncStore` pass
this one suite.

A store's test module subclasses `SyncStoreContract` and provides one fixture:
- `opener`: a callable giving a new handle on one new, empty store (another process's
  view of the same file or database); the fixture closes them all after the test.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from exalate_tui.sync.replica import Content
from exalate_tui.sync.store import Link, SyncStore

CID = "c1"
Opener = Callable[[], SyncStore]


def _content(summary: str) -> Content:
    return Content(fields={"summary": summary})


class SyncStoreContract:
    @pytest.fixture
    def stores(self, opener: Opener) -> tuple[SyncStore, SyncStore]:
        """The engine's store and another process's look at the same one."""
        return opener(), opener()

    # -- links --------------------------------------------------------------------------

    def test_a_link_saved_is_read_back_by_local_and_remote_key(
        self, stores: tuple[SyncStore, SyncStore]
    ) -> None:
        engine, other = stores
        doc = _content("printer on fire")
        engine.save_link(Link(CID, "SNOW-1", None, True, "local", created=1.0))
        engine.save_link(
            Link(CID, "SNOW-2", "JIRA-7", True, "remote", in_version=3, in_doc=doc, created=2.0)
        )
        assert other.link(CID, "SNOW-1") == Link(CID, "SNOW-1", None, True, "local", created=1.0)
        found = other.link_by_remote(CID, "JIRA-7")
        assert found is not None and found.local_key == "SNOW-2" and found.in_doc == doc
        assert found.in_version == 3 and found.origin == "remote" and found.active
        assert other.link(CID, "SNOW-9") is None and other.link_by_remote(CID, "JIRA-1") is None
        assert [link.local_key for link in other.links(CID)] == ["SNOW-1", "SNOW-2"]
        assert [link.local_key for link in other.links(local_key="SNOW-2")] == ["SNOW-2"]
        assert other.links("c2") == []

    def test_a_remote_key_links_to_one_local_ticket_at_most(
        self, stores: tuple[SyncStore, SyncStore]
    ) -> None:
        engine, other = stores
        engine.save_link(Link(CID, "SNOW-1", "JIRA-1", True, "remote", created=1.0))
        engine.save_link(Link(CID, "SNOW-2", "JIRA-1", True, "remote", created=2.0))
        found = other.link_by_remote(CID, "JIRA-1")
        assert found is not None and found.local_key == "SNOW-2"
        assert [link.local_key for link in other.links(CID)] == ["SNOW-2"]

    def test_sent_replicas_move_the_link_and_are_kept_until_seen(
        self, stores: tuple[SyncStore, SyncStore]
    ) -> None:
        engine, other = stores
        link = Link(CID, "SNOW-1", None, True, "local", restart=True, created=1.0)
        engine.save_link(link)
        assert other.sent_keys(CID) == set()
        assert other.due() == {CID: ["SNOW-1"]}
        one, two, three = _content("one"), _content("two"), _content("three")
        engine.sent_many([(link, 4, one)])
        engine.sent_many([(link, 9, two)])
        engine.sent_many([(link, 12, three)])
        found = other.link(CID, "SNOW-1")
        assert found is not None and (found.out_version, found.out_doc) == (12, three)
        assert not found.restart and not found.due and found.last_synced is not None
        assert other.sent_keys(CID) == {"SNOW-1"} and other.due() == {}
        # From the latest kept at or before the version the partner had seen.
        assert other.sent_since(CID, "SNOW-1", 10) == [two, three]
        assert other.sent_since(CID, "SNOW-1", 4) == [one, two, three]
        # The partner answers having seen 9: what came before it is of no more use.
        engine.processed(CID, 1, link=found, seen=9)
        assert other.sent_since(CID, "SNOW-1", 0) == [two, three]

    def test_due_finds_new_restarted_and_retried_links_unless_an_error_holds_them(
        self, stores: tuple[SyncStore, SyncStore]
    ) -> None:
        engine, other = stores
        engine.save_link(Link(CID, "SNOW-1", None, True, "local", created=1.0))
        engine.save_link(Link(CID, "SNOW-2", "J-2", True, "local", out_version=3, created=2.0))
        engine.save_link(Link("c2", "SNOW-3", "J-3", True, "local", out_version=3, due=True))
        engine.save_link(Link(CID, "SNOW-4", None, False, "local", created=4.0))
        engine.save_link(Link(CID, "SNOW-5", None, True, "local", created=5.0))
        engine.fail(CID, "out", "refused", local_key="SNOW-5")
        assert other.due() == {CID: ["SNOW-1"], "c2": ["SNOW-3"]}
        assert sum(len(keys) for keys in other.due(limit=1).values()) == 1

    # -- the cursor and exactly-once ------------------------------------------------------

    def test_processed_records_what_a_message_did_with_the_cursor(
        self, stores: tuple[SyncStore, SyncStore]
    ) -> None:
        engine, other = stores
        error = engine.fail(CID, "in", "bad replica", remote_key="JIRA-1", seq=1)
        engine.processed(
            CID,
            2,
            link=Link(CID, "SNOW-1", "JIRA-1", True, "remote", created=1.0),
            change={
                "local_key": "SNOW-1",
                "remote_key": "JIRA-1",
                "version": 2,
                "rules": "basic",
                "changes": {"fields": {"summary": [None, "x"]}},
            },
            stash=("JIRA-1", "ab" * 32, "a.txt", b"\x00bytes"),
            resolve=error,
        )
        assert other.cursor(CID) == 2 and other.cursors() == {CID: 2}
        assert other.link(CID, "SNOW-1") is not None and other.errors() == []
        assert other.stashed(CID, "JIRA-1", "ab" * 32) == b"\x00bytes"
        (entry,) = other.history("SNOW-1")
        assert entry.changes == {"fields": {"summary": [None, "x"]}} and entry.version == 2
        # The cursor never goes back (a message processed again after a crash).
        engine.processed(CID, 1)
        assert other.cursor(CID) == 2
        engine.processed(CID, 3, unstash="JIRA-1")
        assert other.cursor(CID) == 3 and other.stashed(CID, "JIRA-1", "ab" * 32) is None
        assert other.cursor("c2") == 0

    def test_deferred_writes_read_back_at_once_and_commit_together(
        self, stores: tuple[SyncStore, SyncStore]
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
            assert engine.pending
            assert engine.link(CID, "SNOW-1") is not None
            found = engine.link_by_remote(CID, "JIRA-7")
            assert found is not None and found.local_key == "SNOW-2"
            assert engine.stashed(CID, "JIRA-8", "ab" * 32) == b"bytes"
            # Nothing is in the store yet: one transaction at the end.
            assert other.link(CID, "SNOW-1") is None and other.cursor(CID) == 0
        assert not engine.pending
        assert [link.local_key for link in other.links(CID)] == ["SNOW-1", "SNOW-2"]
        assert other.cursor(CID) == 2
        assert other.stashed(CID, "JIRA-8", "ab" * 32) == b"bytes"

    def test_what_was_done_before_an_error_is_kept(
        self, stores: tuple[SyncStore, SyncStore]
    ) -> None:
        engine, other = stores
        with pytest.raises(RuntimeError), engine.deferred():
            engine.processed(CID, 1, link=Link(CID, "SNOW-1", "JIRA-1", True, "remote"))
            raise RuntimeError("the tracker went away")
        assert other.cursor(CID) == 1 and other.link(CID, "SNOW-1") is not None
        engine.save_link(Link(CID, "SNOW-2", None, True, "local"))  # at once again
        assert other.link(CID, "SNOW-2") is not None

    def test_a_batch_that_cannot_commit_leaves_the_cursor_with_the_links(
        self, stores: tuple[SyncStore, SyncStore]
    ) -> None:
        """Exactly-once: when the batch's transaction fails, neither its links nor its
        cursor are written, so its messages are processed again, once."""
        engine, other = stores
        engine.processed(CID, 1, link=Link(CID, "SNOW-1", "JIRA-1", True, "remote", created=1.0))
        with pytest.raises(TypeError), engine.deferred():
            engine.processed(CID, 2, link=Link(CID, "SNOW-2", "JIRA-2", True, "remote"))
            engine.record_change(
                CID,
                local_key="SNOW-2",
                remote_key="JIRA-2",
                version=2,
                rules="basic",
                changes={"fields": {"summary": [None, object()]}},  # not JSON: the commit fails
            )
        assert other.cursor(CID) == 1 and other.link(CID, "SNOW-2") is None
        assert other.history("SNOW-2") == []
        assert engine.link(CID, "SNOW-2") is None  # nothing kept in memory either

    def test_an_unstashed_key_has_no_bytes_even_from_an_earlier_batch(
        self, stores: tuple[SyncStore, SyncStore]
    ) -> None:
        engine, _ = stores
        engine.processed(CID, 1, stash=("JIRA-1", "cd" * 32, "b.txt", b"old"))
        with engine.deferred():
            engine.processed(CID, 2, unstash="JIRA-1")
            assert engine.stashed(CID, "JIRA-1", "cd" * 32) is None
        assert engine.stashed(CID, "JIRA-1", "cd" * 32) is None

    # -- errors, requests, meta -------------------------------------------------------------

    def test_an_error_is_counted_again_held_and_resolved(
        self, stores: tuple[SyncStore, SyncStore]
    ) -> None:
        engine, other = stores
        first = engine.fail(CID, "in", "bad", remote_key="JIRA-1", seq=4)
        again = engine.fail(CID, "in", "still bad", remote_key="JIRA-1", seq=9)
        kept = engine.fail(CID, "out", "refused", local_key="SNOW-1", holds=False)
        assert first == again != kept
        error = other.error(first)
        assert error is not None and error.attempts == 2 and error.message == "still bad"
        assert error.seq == 4 and error.holds and error.direction == "in"
        assert other.holding(CID, "in", "JIRA-1") == error
        assert other.holding(CID, "out", "SNOW-1") is None  # recorded, holds nothing back
        assert [e.id for e in other.errors(CID)] == [first, kept] and other.errors("c2") == []
        engine.resolve(first)
        assert other.error(first) is None and [e.id for e in other.errors()] == [kept]

    def test_requests_are_taken_in_order(self, stores: tuple[SyncStore, SyncStore]) -> None:
        asker, engine = stores
        asker.request("exalate", CID, "SNOW-1")
        asker.request("bulk", CID, None, "2")
        asker.request("retry", None, None, "7")
        found = engine.requests()
        assert [r[1:] for r in found] == [
            ("exalate", CID, "SNOW-1", None),
            ("bulk", CID, None, "2"),
            ("retry", None, None, "7"),
        ]
        engine.done(found[0][0])
        assert [r[1] for r in asker.requests()] == ["bulk", "retry"]

    def test_meta_is_set_replaced_and_cleared(self, stores: tuple[SyncStore, SyncStore]) -> None:
        engine, other = stores
        assert other.meta("watermark") is None
        engine.set_meta("watermark", "1")
        engine.set_meta("watermark", "2")
        assert other.meta("watermark") == "2"
        engine.set_meta("watermark", None)
        assert other.meta("watermark") is None

    # -- housekeeping ----------------------------------------------------------------------

    def test_forget_drops_a_connection_but_keeps_its_history(
        self, stores: tuple[SyncStore, SyncStore]
    ) -> None:
        engine, other = stores
        link = Link(CID, "SNOW-1", "JIRA-1", True, "remote", created=1.0)
        engine.processed(
            CID,
            5,
            link=link,
            change={
                "local_key": "SNOW-1",
                "remote_key": "JIRA-1",
                "version": 5,
                "rules": "basic",
                "changes": {},
            },
            stash=("JIRA-2", "ef" * 32, "c.txt", b"c"),
        )
        engine.sent_many([(link, 3, _content("x"))])
        engine.fail(CID, "out", "refused", local_key="SNOW-1")
        engine.request("exalate", CID, "SNOW-1")
        engine.save_link(Link("c2", "SNOW-2", None, True, "local"))
        assert other.cids() == {CID, "c2"}
        engine.forget(CID)
        assert other.cids() == {"c2"} and other.links(CID) == [] and other.cursor(CID) == 0
        assert other.sent_since(CID, "SNOW-1", 0) == [] and other.errors() == []
        assert other.requests() == [] and other.stashed(CID, "JIRA-2", "ef" * 32) is None
        assert len(other.history("SNOW-1")) == 1
