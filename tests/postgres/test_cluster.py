"""The tests' own PostgreSQL: a socket in its own directory, no TCP, gone once stopped."""

from __future__ import annotations

from pathlib import Path

import pgcluster
import psycopg
import pytest
from pgcluster import Cluster


def test_a_database_per_test_on_a_socket_only(pg_url: str, postgres: Cluster) -> None:
    with psycopg.connect(pg_url) as db:
        assert db.execute("SHOW listen_addresses").fetchone() == ("",)
        (name,) = db.execute("SELECT current_database()").fetchone() or ("",)
    assert name != "postgres" and str(postgres.directory) in pg_url
    assert postgres.database() != pg_url


def test_a_cluster_restarts_keeping_its_data_and_is_removed_when_stopped(
    postgres: Cluster,
) -> None:
    cluster = Cluster().start()
    try:
        url = cluster.database()
        with psycopg.connect(url, autocommit=True) as db:
            db.execute("CREATE TABLE kept (n int)")
            db.execute("INSERT INTO kept VALUES (7)")
        cluster.restart()
        with psycopg.connect(url) as db:
            assert db.execute("SELECT n FROM kept").fetchall() == [(7,)]
    finally:
        cluster.stop()
    assert not cluster.directory.exists()


def test_without_postgresql_the_reason_says_how_to_install_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(pgcluster, "DEBIAN_BINARIES", tmp_path)
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(pgcluster.Unavailable, match="apt-get install postgresql"):
        pgcluster.binaries()
