"""A throwaway PgBouncer in transaction mode in front of the tests' PostgreSQL (pgcluster.py).

`Bouncer(cluster).start()` writes a configuration of its own in a temp directory,
runs Debian's `pgbouncer` as the `postgres` user (it refuses root) on a free port
of 127.0.0.1, pooling to the cluster's Unix socket with `pool_mode = transaction`,
and waits until it accepts connections; `stop()` ends it and removes the directory.
`url(database)` is a database's URL through it. `.ci/run` installs the package when
it is missing.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from pgcluster import PORT, Cluster, Unavailable


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Bouncer:
    def __init__(self, cluster: Cluster) -> None:
        found = shutil.which("pgbouncer") or (
            "/usr/sbin/pgbouncer" * os.path.exists("/usr/sbin/pgbouncer")
        )
        if not found:
            raise Unavailable(
                "PgBouncer is not installed: apt-get install pgbouncer (.ci/run does it)"
            )
        self.binary = found
        self.cluster = cluster
        self.port = _free_port()
        self.directory = Path(tempfile.mkdtemp(prefix="exalate-bouncer-", dir="/tmp"))
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> Bouncer:
        owner = pwd.getpwnam("postgres")
        (self.directory / "users.txt").write_text('"postgres" ""\n')
        (self.directory / "pgbouncer.ini").write_text(
            "[databases]\n"
            f"* = host={self.cluster.directory} port={PORT}\n"
            "[pgbouncer]\n"
            "listen_addr = 127.0.0.1\n"
            f"listen_port = {self.port}\n"
            "unix_socket_dir =\n"
            "auth_type = trust\n"
            f"auth_file = {self.directory / 'users.txt'}\n"
            "pool_mode = transaction\n"
            "default_pool_size = 4\n"
            "max_client_conn = 200\n"
            f"logfile = {self.directory / 'pgbouncer.log'}\n"
            "ignore_startup_parameters = extra_float_digits\n"
        )
        for path in (self.directory, *self.directory.iterdir()):
            os.chown(path, owner.pw_uid, owner.pw_gid)
        command = [self.binary, str(self.directory / "pgbouncer.ini")]
        if os.geteuid() == 0:
            command = ["runuser", "-u", "postgres", "--", *command]
        self.process = subprocess.Popen(
            command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        deadline = time.monotonic() + 10
        while True:
            if self.process.poll() is not None:
                error = (
                    self.process.stderr.read().decode(errors="replace")
                    if self.process.stderr
                    else ""
                )
                self.stop()
                raise Unavailable(f"pgbouncer exited at once: {error.strip()}")
            with (
                contextlib.suppress(OSError),
                socket.create_connection(("127.0.0.1", self.port), 0.2),
            ):
                return self
            if time.monotonic() > deadline:
                self.stop()
                raise Unavailable("pgbouncer did not accept connections within 10 s")
            time.sleep(0.05)

    def url(self, database: str) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.process is not None and self.process.stderr is not None:
            self.process.stderr.close()
        shutil.rmtree(self.directory, ignore_errors=True)
