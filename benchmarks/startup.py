"""Console to first screen in a real terminal (tmux), with 100 connections, against a minimal app.

The clock starts when tmux is asked to start the program and stops when the
marker text is on the captured screen; peak memory is the process's VmHWM then,
and again 3 s later, once the console has settled.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from .harness import Figure, summarize, versus
from .homes import home_with_connections

RUNS = 10
# Peak memory again once the console has settled: files validated (pydantic), the
# supervisor running. The benchmark's home is a public side: its partners poll it.
SETTLE = 3.0
SETTLED_RUNS = 3
SESSION = "exalate-bench"


def _tmux(*args: str) -> str:
    return subprocess.run(
        ["tmux", "-L", SESSION, *args], check=True, capture_output=True, text=True
    ).stdout


def _launch(
    argv: list[str], marker: str, env: dict[str, str], settle: float = 0.0
) -> tuple[float, float]:
    """Seconds until `marker` is on screen, and peak memory in MB `settle` s later."""
    command = " ".join(f"'{part}'" for part in argv)
    exports = " ".join(f"{key}='{value}'" for key, value in env.items())
    start = time.perf_counter()
    _tmux(
        "new-window",
        "-d",
        "-t",
        f"{SESSION}:",
        "-n",
        "run",
        f"exec env -u PYTHONDONTWRITEBYTECODE {exports} {command}",
    )
    deadline = start + 30
    while time.perf_counter() < deadline:
        if marker in _tmux("capture-pane", "-p", "-t", f"{SESSION}:run"):
            elapsed = time.perf_counter() - start
            break
        time.sleep(0.005)
    else:
        raise RuntimeError(f"{marker!r} never appeared on screen for {argv}")
    time.sleep(settle)
    pid = _tmux("display-message", "-p", "-t", f"{SESSION}:run", "#{pane_pid}").strip()
    peak_kb = 0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            peak_kb = int(line.split()[1])
    _tmux("kill-window", "-t", f"{SESSION}:run")
    return elapsed, peak_kb / 1024


def measure() -> list[Figure]:
    if shutil.which("tmux") is None:
        raise RuntimeError("tmux is needed: apt-get install tmux")
    home = home_with_connections(Path(tempfile.mkdtemp(prefix="bench-startup-")) / "home", 100)
    # No PYTHONDONTWRITEBYTECODE: the warm-up run writes bytecode, as an installed package has.
    env = {"TERM": "xterm-256color", "TEXTUAL_ANIMATIONS": "none", "PATH": os.environ["PATH"]}
    subprocess.run(["tmux", "-L", SESSION, "kill-server"], capture_output=True)
    _tmux("new-session", "-d", "-s", SESSION, "-x", "120", "-y", "36")
    ours_argv = [sys.executable, "-m", "exalate_tui.cli", "--home", str(home.path)]
    reference_argv = [sys.executable, str(Path(__file__).with_name("minimal_app.py"))]
    ours, reference, memory, settled = [], [], [], []
    try:
        _launch(ours_argv, "snow_to_partner0000", env)  # warm caches and bytecode
        _launch(reference_argv, "Cancel", env)
        for _ in range(RUNS):
            seconds, peak = _launch(ours_argv, "snow_to_partner0000", env)
            ours.append(seconds)
            memory.append(peak)
            reference.append(_launch(reference_argv, "Cancel", env)[0])
        for _ in range(SETTLED_RUNS):
            settled.append(_launch(ours_argv, "snow_to_partner0000", env, SETTLE)[1])
    finally:
        subprocess.run(["tmux", "-L", SESSION, "kill-server"], capture_output=True)
    peak, peak_spread = summarize(memory)
    later, later_spread = summarize(settled)
    return [
        versus(
            "console to first screen (100 connections)",
            "s",
            ours,
            reference,
            "minimal Textual app",
            1.2,
            "tmux new-window until the first row is captured on screen",
        ),
        Figure(
            name="console peak memory",
            unit="MB",
            value=peak,
            target="≤ 50 MB",
            met=peak <= 50,
            method="VmHWM of the console process once its first screen is shown",
            runs=RUNS,
            spread=peak_spread,
        ),
        Figure(
            name=f"console peak memory, {SETTLE:g} s later",
            unit="MB",
            value=later,
            target="≤ 50 MB",
            met=later <= 50,
            method=f"VmHWM {SETTLE:g} s after the first screen: files validated, supervisor up",
            runs=SETTLED_RUNS,
            spread=later_spread,
        ),
    ]
