"""Console to first screen in a real terminal (tmux), with 100 connections, against a minimal app.

The clock starts when tmux is asked to start the program and stops when a
marker text is on the captured screen: the Connections table's header (the
first screen: the files are read in a worker after it), then the first row
(against the floor of this stack, `model_floor.py`: the minimal app once the
same home is validated). Peak memory is the process's VmHWM at the first row,
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

from exalate_tui.home.store import Home

from .harness import Check, Figure, ratio_check, summarize
from .homes import home_that_calls_out, home_with_connections

RUNS = 10
# Issue 9: the console to its first screen within 1.5× the minimal Textual app (the
# tighter 1.2× took start-up tricks in every layer, each worth milliseconds nobody feels).
START_RATIO = 1.5
# Peak memory again once the console has settled: files validated (pydantic), the
# supervisor running. Two homes: a public side, whose partners poll it (no link calls
# out, so httpx never loads), and a private side, whose every link calls out.
SETTLE = 3.0
SETTLED_RUNS = 3
SESSION = "exalate-bench"


def _tmux(*args: str) -> str:
    return subprocess.run(
        ["tmux", "-L", SESSION, *args], check=True, capture_output=True, text=True
    ).stdout


def _launch(
    argv: list[str], markers: tuple[str, ...], env: dict[str, str], settle: float = 0.0
) -> tuple[list[float], float]:
    """Seconds until each of `markers` is on screen, and peak memory in MB `settle` s
    after the last."""
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
    seen: list[float] = []
    while len(seen) < len(markers):
        if time.perf_counter() > deadline:
            raise RuntimeError(f"{markers[len(seen)]!r} never appeared on screen for {argv}")
        screen = _tmux("capture-pane", "-p", "-t", f"{SESSION}:run")
        now = time.perf_counter() - start
        while len(seen) < len(markers) and markers[len(seen)] in screen:
            seen.append(now)
        time.sleep(0.005)
    time.sleep(settle)
    pid = _tmux("display-message", "-p", "-t", f"{SESSION}:run", "#{pane_pid}").strip()
    peak_kb = 0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            peak_kb = int(line.split()[1])
    _tmux("kill-window", "-t", f"{SESSION}:run")
    return seen, peak_kb / 1024


# On screen once the Connections tab is drawn, before its rows are read.
HEADER = "Name / local → remote"

# The two kinds of home: (label, how it is made, the first row's name).
HOMES = (
    ("partners poll it", home_with_connections, "snow_to_partner0000"),
    ("its links call out", home_that_calls_out, "jira_from_partner0000"),
)


def measure() -> list[Figure]:
    if shutil.which("tmux") is None:
        raise RuntimeError("tmux is needed: apt-get install tmux")
    root = Path(tempfile.mkdtemp(prefix="bench-startup-"))
    homes = [(label, make(root / marker, 100), marker) for label, make, marker in HOMES]
    # No PYTHONDONTWRITEBYTECODE: the warm-up run writes bytecode, as an installed package has.
    env = {"TERM": "xterm-256color", "TEXTUAL_ANIMATIONS": "none", "PATH": os.environ["PATH"]}
    subprocess.run(["tmux", "-L", SESSION, "kill-server"], capture_output=True)
    _tmux("new-session", "-d", "-s", SESSION, "-x", "120", "-y", "36")
    here = Path(__file__).parent
    reference_argv = [sys.executable, str(here / "minimal_app.py")]
    runs: dict[str, dict[str, list[float]]] = {
        label: {"screen": [], "rows": [], "floor": [], "peak": [], "settled": []}
        for label, _, _ in homes
    }
    reference: list[float] = []

    def ours(home: Home, marker: str, settle: float = 0.0) -> tuple[list[float], float]:
        argv = [sys.executable, "-m", "exalate_tui.cli", "--home", str(home.path)]
        return _launch(argv, (HEADER, marker), env, settle)

    def floor(home: Home) -> float:
        argv = [sys.executable, str(here / "model_floor.py"), str(home.path)]
        return _launch(argv, ("Cancel",), env)[0][0]

    try:
        for _, home, marker in homes:
            ours(home, marker)  # warm caches and bytecode
            floor(home)
        _launch(reference_argv, ("Cancel",), env)
        for _ in range(RUNS):  # interleaved: each kind of home, its floor, the reference
            for label, home, marker in homes:
                (screen, rows), peak = ours(home, marker)
                runs[label]["screen"].append(screen)
                runs[label]["rows"].append(rows)
                runs[label]["peak"].append(peak)
                runs[label]["floor"].append(floor(home))
            reference.append(_launch(reference_argv, ("Cancel",), env)[0][0])
        for _ in range(SETTLED_RUNS):
            for label, home, marker in homes:
                runs[label]["settled"].append(ours(home, marker, SETTLE)[1])
    finally:
        subprocess.run(["tmux", "-L", SESSION, "kill-server"], capture_output=True)
    ref, ref_spread = summarize(reference)
    figures = []
    for label, _, _ in homes:
        value, spread = summarize(runs[label]["screen"])
        rows, rows_spread = summarize(runs[label]["rows"])
        base, base_spread = summarize(runs[label]["floor"])
        figures += [
            Figure(
                name=f"console to first screen (100 connections, {label})",
                unit="s",
                value=value,
                reference=ref,
                reference_name="minimal Textual app",
                checks=[ratio_check(value, ref, START_RATIO)],
                method="tmux new-window until the Connections table's header is captured",
                runs=RUNS,
                spread=spread,
                notes=[f"reference spread {ref_spread} s"],
            ),
            Figure(
                name=f"console to its 100 rows ({label})",
                unit="s",
                value=rows,
                reference=base,
                reference_name="minimal app after validating the home",
                method=(
                    "tmux new-window until the first row is captured; reference "
                    "benchmarks/model_floor.py (the models imported, the same files "
                    "validated, then the minimal app)"
                ),
                runs=RUNS,
                spread=rows_spread,
                notes=[
                    f"reference spread {base_spread} s; that floor is "
                    f"{base / ref:.2f}× the minimal app"
                ],
            ),
        ]
    for label, _, _ in homes:
        peak, peak_spread = summarize(runs[label]["peak"])
        later, later_spread = summarize(runs[label]["settled"])
        figures += [
            Figure(
                name=f"console peak memory ({label})",
                unit="MB",
                value=peak,
                checks=[Check("", peak, "≤", 50, "MB")],
                method="VmHWM of the console process once its first screen is shown",
                runs=RUNS,
                spread=peak_spread,
            ),
            Figure(
                name=f"console peak memory, {SETTLE:g} s later ({label})",
                unit="MB",
                value=later,
                checks=[Check("", later, "≤", 50, "MB")],
                method=(
                    f"VmHWM {SETTLE:g} s after the first screen: files validated, supervisor "
                    "up" + ("" if label == HOMES[0][0] else ", a link per connection calling out")
                ),
                runs=SETTLED_RUNS,
                spread=later_spread,
            ),
        ]
    return figures
