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


@dataclass
class Figure:
    name: str
    unit: str
    value: float
    target: str
    met: bool
    method: str
    runs: int
    spread: str
    reference: float | None = None
    reference_name: str = ""
    notes: list[str] = field(default_factory=list)

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


def versus(
    name: str,
    unit: str,
    ours: Sequence[float],
    reference: Sequence[float],
    reference_name: str,
    ratio: float,
    method: str,
    notes: list[str] | None = None,
) -> Figure:
    """Our median against a reference measured alongside: met at most `ratio` times it."""
    value, spread = summarize(ours)
    ref, _ = summarize(reference)
    return Figure(
        name=name,
        unit=unit,
        value=value,
        reference=ref,
        reference_name=reference_name,
        target=f"≤ {ratio:g}× reference",
        met=value <= ratio * ref,
        method=method,
        runs=len(ours),
        spread=spread,
        notes=notes or [],
    )


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
        rows.append((f.name, value, reference, ratio, f.target, "yes" if f.met else "NO"))
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = [
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True))
        for row in rows
    ]
    lines.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(lines)


def write_json(figures: Sequence[Figure], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    document = [asdict(f) | {"ratio": f.ratio} for f in figures]
    path.write_text(json.dumps(document, indent=2) + "\n")
