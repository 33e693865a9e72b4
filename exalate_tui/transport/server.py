"""Serving the node: its socket, uvicorn, and the supervisor beside it until a signal.

`serve(home, hooks_for, host, port)` opens the state, binds the socket,
serves the node app (`node.create_app`, wired by `lifecycle/runtime.py`)
with uvicorn and runs the `Supervisor` (the requests this side makes) and
the hooks' housekeeping, until SIGINT or SIGTERM; then stops them in order
and closes the state. For all that time it holds the home's node lock and
`node.pid` says where it listens (transport/background.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import resource
import signal
import socket
import threading
from collections.abc import Awaitable, Callable, Iterator, Sequence
from functools import partial
from types import FrameType

import uvicorn

from exalate_tui import __version__
from exalate_tui.home.store import Home
from exalate_tui.transport import background
from exalate_tui.transport.gate import KEEP_ALIVE, RESERVED_FILES, AcceptErrors, Gate, guarded
from exalate_tui.transport.hooks import Hooks
from exalate_tui.transport.node import Node, create_app
from exalate_tui.transport.sqlite_streams import SqliteStreams, doorbell_address
from exalate_tui.transport.storage import open_streams
from exalate_tui.transport.streams import Streams
from exalate_tui.transport.supervisor import Supervisor
from exalate_tui.transport.wakeups import Wakeups

log = logging.getLogger(__name__)

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 7917  # Instance.listen_port's default
# Thousands of pollers reconnect at once after a restart: let the kernel queue them.
BACKLOG = 4096
# A request still in progress when the node stops gets this long to finish.
GRACEFUL_STOP = 5
HOUSEKEEPING_EVERY = 3600.0


class _Server(uvicorn.Server):
    """uvicorn's server, stopped by SIGINT/SIGTERM without dying of the signal afterwards.

    uvicorn re-raises a caught signal once it has shut down, which would end
    the process before the supervisor is stopped and the state closed; here
    the signal only starts the graceful stop (a second Ctrl+C forces it).
    """

    def __init__(self, config: uvicorn.Config, wakeups: Wakeups) -> None:
        super().__init__(config)
        self.wakeups = wakeups

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        if threading.current_thread() is not threading.main_thread():
            yield  # signals reach the main thread only; its owner stops us
            return
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self.handle_exit, sig, None)
        try:
            yield
        finally:
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(sig)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        super().handle_exit(sig, frame)
        # Long-polls answer now instead of holding the stop for up to 30 s.
        self.wakeups.close()


def _bind(host: str, port: int) -> socket.socket:
    """The listening socket, bound before anything starts: a taken port fails plainly."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP, not 0: asyncio sets TCP_NODELAY only on sockets that say they are TCP.
    # Without it a keep-alive answer written in two parts waits ~40 ms for the
    # caller's delayed ACK (Nagle), on every request but a connection's first.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
    except BaseException:
        sock.close()
        raise
    return sock


def _raise_open_files() -> int:
    """Every long-poll holds a socket: allow as many as the hard limit lets us.

    Returns the limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


async def _housekeeping(hooks: Hooks) -> None:
    while True:
        for cid in await asyncio.to_thread(hooks.housekeeping):
            log.info("connection %s: the partner never heard of its deletion; forgotten", cid)
        await asyncio.sleep(HOUSEKEEPING_EVERY)


def _job_ended(server: uvicorn.Server, task: asyncio.Task[None]) -> None:
    if not task.cancelled():
        log.error("%s stopped: %r; stopping the node", task.get_name(), task.exception())
        server.should_exit = True


async def serve(
    home: Home,
    hooks_for: Callable[[Home, Streams], Hooks],
    host: str | None = None,
    port: int | None = None,
    beside: Sequence[Callable[[Home, Streams], Awaitable[None]]] = (),
) -> None:
    """Serve the API and run the supervisor until SIGINT or SIGTERM.

    `beside` are the layers above's jobs that run as long as the node does
    (the sync engine), each given the home and the open state; one that
    crashes stops the node, as a crashed supervisor does.

    `hooks_for(home, state)` makes the layer above's hooks once the state is
    open. `host` and `port` default to `instance.toml`'s
    `listen_host`/`listen_port`, else 127.0.0.1:7917. One log line says
    where it listens.
    """
    instance = home.load_instance()
    host = host or (instance.listen_host if instance else DEFAULT_HOST)
    port = port if port is not None else (instance.listen_port if instance else DEFAULT_PORT)
    home.ensure()
    open_files = _raise_open_files()
    # One node per home: the lock says one runs, node.pid where (transport/background.py).
    node_claim = background.claim(home)
    try:
        sock = _bind(host, port)
    except BaseException:
        node_claim.release()
        raise
    try:
        state = open_streams(home)
    except BaseException:
        sock.close()
        node_claim.release()
        raise
    try:
        # Opened now, not at the first request: a database key that is missing or not
        # the other workers' stops the node before it serves anyone.
        home.connections.stamp()
    except BaseException:
        state.close()
        sock.close()
        node_claim.release()
        raise
    try:
        hooks = hooks_for(home, state)
        app = create_app(home, state, hooks)
        node: Node = app.state.node
        config = uvicorn.Config(
            app,
            lifespan="off",
            log_config=None,
            log_level="warning",
            access_log=False,
            server_header=False,
            # No client addresses are used: one middleware frame less per parked poll.
            proxy_headers=False,
            backlog=BACKLOG,
            timeout_graceful_shutdown=GRACEFUL_STOP,
            timeout_keep_alive=KEEP_ALIVE,
            http=guarded(Gate(max(64, open_files - RESERVED_FILES))),
        )
        server = _Server(config, node.wakeups)
        address, bound = sock.getsockname()[:2]
        where = f"[{address}]" if ":" in address else address
        node_claim.record(address, bound)
        log.info(
            "exalate-tui node %s (%s) listening on http://%s:%d, home %s%s",
            __version__,
            instance.short_name if instance else "no instance.toml yet",
            where,
            bound,
            home.path,
            "" if isinstance(state, SqliteStreams) else f", streams in {state.where}",
        )
        loop = asyncio.get_running_loop()
        loop.set_exception_handler(AcceptErrors(open_files))
        # The doorbell is state.sqlite3's; workers on PostgreSQL hear each other through
        # their streams' hints (pg_wakeups), which call the node's on_hint listener.
        bell = doorbell_address(home.state_path) if isinstance(state, SqliteStreams) else None
        stop_ringing = node.wakeups.ring_here(bell)
        supervisor = asyncio.create_task(Supervisor(home, state, hooks).run(), name="supervisor")
        # Polling nobody is no node at all: a crashed supervisor stops the node, loudly.
        supervisor.add_done_callback(lambda _: setattr(server, "should_exit", True))
        chores = asyncio.create_task(_housekeeping(hooks), name="housekeeping")
        jobs: list[asyncio.Task[None]] = [asyncio.ensure_future(job(home, state)) for job in beside]
        for job in jobs:
            job.add_done_callback(partial(_job_ended, server))
        # docs/reliability.md, promise 13: what was loaded to start (FastAPI, pydantic, the
        # routes) lives as long as the node, so the collector never looks at it again: a
        # full collection under a flood of refused bodies took 56-126 ms, each a stall of
        # every request.
        gc.freeze()
        try:
            await server.serve(sockets=[sock])
        finally:
            for task in (supervisor, chores, *jobs):
                task.cancel()
            for task in (supervisor, chores, *jobs):
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            node.remove_listener()
            stop_ringing()
            loop.set_exception_handler(None)
            await node.wakeups.aclose()
    finally:
        state.close()
        sock.close()
        node_claim.release()
    log.info("exalate-tui node stopped")
