"""The median the benchmark reports everywhere (NaN, not an error, for no values)."""
from __future__ import annotations

from typing import List


def median(values: List[float]) -> float:
    q = sorted(values)
    if not q:
        return float("nan")
    mid = len(q) // 2
    return q[mid] if len(q) % 2 else 0.5 * (q[mid - 1] + q[mid])
