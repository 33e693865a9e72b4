"""Wall time of `exalate-tui initiate ... --json` against importing pydantic alone."""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

from .harness import Figure, versus
from .homes import home_with_connections
from .nodes import env

RUNS = 20


def _run(argv: list[str]) -> float:
    import time

    start = time.perf_counter()
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, stdin=subprocess.DEVNULL, env=env())
    return time.perf_counter() - start


def measure() -> list[Figure]:
    home = home_with_connections(Path(tempfile.mkdtemp(prefix="bench-headless-")) / "home", 0)
    reference_argv = [sys.executable, "-c", "from pydantic import BaseModel"]
    ours, reference = [], []
    _run(reference_argv)  # warm the page cache for both
    for n in range(RUNS + 1):
        ours_argv = [
            sys.executable,
            "-m",
            "exalate_tui.cli",
            "--home",
            str(home.path),
            "initiate",
            "--no-url",
            "--mode",
            "script",
            "--local-name",
            "snow",
            "--remote-name",
            f"partner{n}",
            "--json",
        ]
        sample = _run(ours_argv)
        if n:  # the first run compiles bytecode
            ours.append(sample)
            reference.append(_run(reference_argv))
    return [
        versus(
            "headless initiate --json",
            "s",
            ours,
            reference,
            "import pydantic",
            1.3,
            "subprocess wall time, interleaved with the reference",
        )
    ]
