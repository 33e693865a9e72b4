"""Runs Script rules in the sandbox worker (sync/sandbox.py), each run under a deadline.

One worker process per `Runner` (the process-wide one is `runner()`), started
on the first run and again after it was killed. A run sends the rule's
source the first time that worker sees it (keyed by its SHA-256), then only
the key and the data; the answer comes back within the deadline or the
worker is killed (SIGKILL: it stops wherever it is, inside a C call too) and
the run raises `RuleTimeout`. Runs are serialized by a lock: the engine, a
Test run from the console and the CLI may share one process.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import select
import subprocess
import sys
import threading
import time
from typing import Any

from exalate_tui.sync.rules import RuleError
from exalate_tui.sync.sandbox import FRAME, MAX_FRAME

# The worker's own start (an interpreter and RestrictedPython): not the rule's time.
START_TIMEOUT = 30.0
MEMORY_MB = 256


class RuleFailed(RuleError):
    """A Script rule raised, or was refused by the sandbox; `line` is the rule's line."""

    def __init__(self, message: str, line: int | None = None, kind: str = "") -> None:
        super().__init__(message)
        self.line = line
        self.kind = kind


class RuleTimeout(RuleFailed):
    """The rule ran past its time limit and was stopped."""


class _Dead(Exception):
    """The worker went away mid-run (killed, crashed)."""


class Runner:
    def __init__(self, memory_mb: int = MEMORY_MB) -> None:
        self.memory_mb = memory_mb
        self._lock = threading.Lock()
        self._proc: subprocess.Popen[bytes] | None = None
        self._known: set[str] = set()
        self.starts = 0  # how many workers were started (tests: a kill restarts one)

    def close(self) -> None:
        with self._lock:
            self._stop()

    def _stop(self) -> None:
        proc, self._proc = self._proc, None
        self._known.clear()
        if proc is not None:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            proc.wait()
            for stream in (proc.stdin, proc.stdout):
                if stream is not None:
                    stream.close()

    def _start(self) -> subprocess.Popen[bytes]:
        if self._proc is not None and self._proc.poll() is None:
            return self._proc
        self._stop()
        proc = subprocess.Popen(
            [sys.executable, "-m", "exalate_tui.sync.sandbox", str(self.memory_mb)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            close_fds=True,
        )
        self._proc = proc
        self.starts += 1
        try:
            ready = self._answer(proc, time.monotonic() + START_TIMEOUT)
        except (_Dead, TimeoutError):
            self._stop()
            raise RuleFailed(
                "the rules sandbox could not start (python -m exalate_tui.sync.sandbox)"
            ) from None
        if ready != {"ready": True}:
            self._stop()
            raise RuleFailed("the rules sandbox did not start properly")
        return proc

    def _answer(self, proc: subprocess.Popen[bytes], deadline: float) -> Any:
        (size,) = FRAME.unpack(self._exactly(proc, FRAME.size, deadline))
        if size > MAX_FRAME:
            raise _Dead
        return json.loads(self._exactly(proc, size, deadline))

    def _exactly(self, proc: subprocess.Popen[bytes], size: int, deadline: float) -> bytes:
        assert proc.stdout is not None
        fd = proc.stdout.fileno()
        parts: list[bytes] = []
        while size:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                raise TimeoutError
            chunk = os.read(fd, min(size, 1 << 20))
            if not chunk:
                raise _Dead
            parts.append(chunk)
            size -= len(chunk)
        return b"".join(parts)

    def run(
        self, source: str, filename: str, kind: str, data: dict[str, Any], time_limit: float
    ) -> dict[str, Any]:
        """What the rule made of `data` (sandbox.run's answer); `RuleFailed` saying where
        and why it failed, `RuleTimeout` when it was stopped."""
        key = hashlib.sha256(source.encode()).hexdigest()
        with self._lock:
            proc = self._start()
            request: dict[str, Any] = {"key": key, "filename": filename, "kind": kind, "data": data}
            if key not in self._known:
                request["source"] = source
            body = json.dumps(request, separators=(",", ":")).encode()
            try:
                assert proc.stdin is not None
                proc.stdin.write(FRAME.pack(len(body)) + body)
                proc.stdin.flush()
                answer = self._answer(proc, time.monotonic() + time_limit)
            except TimeoutError:
                self._stop()
                raise RuleTimeout(
                    f"{filename}: stopped after {time_limit:g} s, its time limit "
                    "(an endless loop?)",
                    kind="timeout",
                ) from None
            except (_Dead, BrokenPipeError, OSError):
                self._stop()
                raise RuleFailed(
                    f"{filename}: the sandbox stopped while the rule ran (it is restarted)"
                ) from None
            if "need" in answer:  # cannot happen: we track what it compiled
                self._stop()
                raise RuleFailed(f"{filename}: the sandbox lost the rule; try again")
            if answer.get("error", {}).get("type") != "refused":
                self._known.add(key)
            if answer.get("restart"):
                self._stop()
            if "error" in answer:
                error = answer["error"]
                where = f"{filename} line {error['line']}" if error.get("line") else filename
                raise RuleFailed(
                    f"{where}: {error['type']}: {error['message']}",
                    line=error.get("line"),
                    kind=error["type"],
                )
            result: dict[str, Any] = answer["ok"]
            return result


_RUNNER: Runner | None = None
_RUNNER_LOCK = threading.Lock()


def runner() -> Runner:
    """This process's runner (its worker starts on the first run)."""
    global _RUNNER
    with _RUNNER_LOCK:
        if _RUNNER is None:
            _RUNNER = Runner()
        return _RUNNER
