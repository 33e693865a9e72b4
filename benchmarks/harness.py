"""What every benchmark reports, and the table and JSON they are printed as.

A benchmark measures our figure and its reference in the same run, so the
ratio means something on whatever machine it runs on.
"""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class Check:
    """One condition of a target, e.g. `Check("p99", 4.1, "≤", 25, "ms")`.

    The target's text and whether it is met both come from here, so they
    cannot disagree, and no figure's `met` is written by hand.
    """

    what: str
    observed: float
    op: str  # "<", "≤" or "≥"
    limit: float
    unit: str = ""

    @property
    def met(self) -> bool:
        if self.op == "<":
            return self.observed < self.limit
        if self.op == "≤":
            return self.observed <= self.limit
        if self.op == "≥":
            return self.observed >= self.limit
        raise ValueError(f"unknown comparison {self.op!r}")

    def __str__(self) -> str:
        unit = "" if self.unit in ("", "×") else f" {self.unit}"
        limit = f"{self.limit:,.10g}{'×' if self.unit == '×' else ''}"
        return f"{self.what} {self.op} {limit}{unit}".strip()


def ratio_check(value: float, reference: float, limit: float) -> Check:
    """`value` at most `limit` times `reference` (measured in the same run)."""
    return Check("", value / reference, "≤", limit, "×")


@dataclass
class Figure:
    """A figure and how it was measured; `met` is computed from `checks` (all must hold).

    A figure without checks is reported only: its `met` is None ("-").
    """

    name: str
    unit: str
    value: float
    method: str
    runs: int
    spread: str
    checks: list[Check] = field(default_factory=list)
    target: str = ""
    met: bool | None = field(default=None, init=False)
    reference: float | None = None
    reference_name: str = ""
    notes: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.checks:
            self.met = all(check.met for check in self.checks)
            if not self.target:
                self.target = "; ".join(
                    f"{check} reference" if check.unit == "×" else str(check)
                    for check in self.checks
                )
        elif not self.target:
            self.target = "reported"

    @property
    def ratio(self) -> float | None:
        if not self.reference:
            return None
        return self.value / self.reference


def summarize(samples: Sequence[float]) -> tuple[float, str]:
    """Median, and the spread as min–max with the p90."""
    ordered = sorted(samples)
    p90 = ordered[min(len(ordered) - 1, int(0.9 * len(ordered)))]
    return statistics.median(ordered), f"{ordered[0]:.3g}–{ordered[-1]:.3g} (p90 {p90:.3g})"


def percentile(samples: Sequence[float], fraction: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def timed(run: Callable[[], object], repeat: int) -> list[float]:
    samples = []
    for _ in range(repeat):
        start = time.perf_counter()
        run()
        samples.append(time.perf_counter() - start)
    return samples


def table(figures: Sequence[Figure]) -> str:
    header = ("figure", "ours", "reference", "ratio", "target", "met")
    rows = [header]
    for f in figures:
        reference = f"{f.reference:.4g} {f.unit} ({f.reference_name})" if f.reference else "-"
        ratio = f"{f.ratio:.2f}×" if f.ratio is not None else "-"
        value = f"{f.value:.4g} {f.unit}"
        met = "-" if f.met is None else "yes" if f.met else "NO"
        rows.append((f.name, value, reference, ratio, f.target, met))
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = [
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True))
        for row in rows
    ]
    lines.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(lines)


def write_json(figures: Sequence[Figure], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    document = [
        asdict(f) | {"ratio": f.ratio, "checks": [str(c) for c in f.checks]} for f in figures
    ]
    path.write_text(json.dumps(document, indent=2) + "\n")
