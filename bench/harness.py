"""Benchmark harness: time a stage and its baseline on the same generated input, report the ratio.

Each benchmark runs the candidate and the baseline in one process, alternating, `repeat` times,
and keeps the best time of each (least disturbed by the machine). Results go to
`bench/results/<name>.json` with the machine's facts, so runs can be compared over time.
"""

from __future__ import annotations

import json
import os
import platform
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


@dataclass
class Measurement:
    name: str
    seconds: float
    items: int

    @property
    def rate(self) -> float:
        return self.items / self.seconds if self.seconds else float("inf")


def measure(name: str, fn: Callable[[], int], repeat: int = 3) -> Measurement:
    """Best of `repeat` runs of `fn`, which returns how many items it processed."""
    best, items = float("inf"), 0
    for _ in range(repeat):
        started = time.perf_counter()
        items = fn()
        best = min(best, time.perf_counter() - started)
    return Measurement(name, best, items)


def compare(
    name: str,
    unit: str,
    candidate: Callable[[], int],
    baseline: Callable[[], int],
    repeat: int = 3,
    target: float | None = None,
    extra: dict | None = None,
) -> dict:
    """Time both (interleaved), print and save `{candidate rate} / {baseline rate}`."""
    runs: dict[str, list[Measurement]] = {"candidate": [], "baseline": []}
    for _ in range(repeat):
        runs["candidate"].append(measure("candidate", candidate, 1))
        runs["baseline"].append(measure("baseline", baseline, 1))
    cand = min(runs["candidate"], key=lambda m: m.seconds)
    base = min(runs["baseline"], key=lambda m: m.seconds)
    ratio = cand.rate / base.rate
    result = {
        "benchmark": name,
        "unit": unit,
        "candidate": {"items": cand.items, "seconds": round(cand.seconds, 4), "rate": round(cand.rate, 1)},
        "baseline": {"items": base.items, "seconds": round(base.seconds, 4), "rate": round(base.rate, 1)},
        "ratio": round(ratio, 3),
        "target": target,
        "meets_target": None if target is None else ratio >= target,
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
        **(extra or {}),
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps(result, indent=2) + "\n")
    print(
        f"{name}: candidate {cand.rate:,.0f} {unit}, baseline {base.rate:,.0f} {unit}, ratio {ratio:.2f}"
        + (f" (target >= {target})" if target else "")
    )
    return result
