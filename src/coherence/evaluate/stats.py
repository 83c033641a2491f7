"""Rates with intervals and paired comparisons: Wilson 95% intervals, McNemar's exact test, paired bootstrap.

Every rate is reported with its n and a Wilson score interval (never zero-width at 0% or 100%); a
difference of two rates can have Newcombe's score interval built from their Wilson intervals, and any
statistic of items a percentile bootstrap interval. Two
models answering the same items are compared paired: binary outcomes with McNemar's exact test (the
p-value) and a paired bootstrap interval of the difference; ratios and scores with a paired bootstrap
(resampling items, both models together). Identical answers give a delta of exactly 0 and p = 1.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

Z95 = 1.959963984540054
BOOTSTRAP_RESAMPLES = 2000


def wilson(k: int, n: int, z: float = Z95) -> tuple[float, float] | None:
    """Wilson score interval of ``k`` successes in ``n`` trials; None when n is 0."""
    if n <= 0:
        return None
    p = k / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    lo, hi = max(0.0, centre - half), min(1.0, centre + half)
    return (0.0 if k == 0 else lo), (1.0 if k == n else hi)  # exact bounds, not 1 - 1e-16


def newcombe(k1: int, n1: int, k2: int, n2: int) -> tuple[float, float] | None:
    """Newcombe's hybrid score interval (1998, method 10) of ``k1/n1 - k2/n2`` from the two Wilson
    intervals; never zero-width; None when either n is 0."""
    a, b = wilson(k1, n1), wilson(k2, n2)
    if a is None or b is None:
        return None
    p1, p2 = k1 / n1, k2 / n2
    d = p1 - p2
    lo = d - math.sqrt((p1 - a[0]) ** 2 + (b[1] - p2) ** 2)
    hi = d + math.sqrt((a[1] - p1) ** 2 + (p2 - b[0]) ** 2)
    return max(-1.0, lo), min(1.0, hi)


def mcnemar_exact(b: int, c: int) -> float:
    """Two-sided exact McNemar p-value from the discordant counts (b: only the first model, c: only
    the second); 1.0 when there are none."""
    n = b + c
    if n == 0:
        return 1.0
    k = min(b, c)
    tail = sum(math.comb(n, i) for i in range(k + 1)) / 2 ** n
    return min(1.0, 2 * tail)


def paired_ratio(both: int, first_only: int, second_only: int, z: float = Z95) -> tuple[float, float] | None:
    """Bonett-Price hybrid Wilson score 95% interval (Bonett & Price 2006; Fagerland, Lydersen & Laake 2014
    recommend it) of the ratio ``p_first / p_second`` of two proportions measured on the same items, from
    the items with the event under both, under the first only and under the second only. None when the
    second has no event (the ratio is undefined)."""
    first, second = both + first_only, both + second_only
    if second == 0:
        return None
    events = both + first_only + second_only  # items with no event under either do not enter
    spread = math.sqrt((first_only + second_only + 2) / ((first + 1) * (second + 1)))
    se_first = math.sqrt((1 - (first + 1) / (events + 2)) / (first + 1))
    se_second = math.sqrt((1 - (second + 1) / (events + 2)) / (second + 1))
    z_adj = spread / (se_first + se_second) * z

    def score(k: int) -> tuple[float, float]:  # Wilson score interval of k / events at z_adj
        root = z_adj * math.sqrt(z_adj * z_adj + 4 * k * (1 - k / events))
        denom = 2 * (events + z_adj * z_adj)
        return (2 * k + z_adj * z_adj - root) / denom, (2 * k + z_adj * z_adj + root) / denom

    (lo1, hi1), (lo2, hi2) = score(first), score(second)
    return max(0.0, lo1) / hi2, hi1 / lo2


@dataclass(frozen=True)
class Comparison:
    """Difference ``other - base`` on paired items."""

    delta: float
    ci: tuple[float, float]
    p_value: float | None
    n: int
    test: str


def _quantiles(values: list[float]) -> tuple[float, float]:
    values = sorted(values)
    lo = values[int(0.025 * (len(values) - 1))]
    hi = values[int(math.ceil(0.975 * (len(values) - 1)))]
    return lo, hi


def _resamples(n: int, seed: int) -> Iterator[list[int]]:
    rng = random.Random(seed)
    for _ in range(BOOTSTRAP_RESAMPLES):
        yield [rng.randrange(n) for _ in range(n)]


def paired_binary(base: Sequence[bool], other: Sequence[bool], *, seed: int = 0) -> Comparison | None:
    """McNemar exact p and a paired bootstrap 95% interval of ``mean(other) - mean(base)``."""
    if len(base) != len(other):
        raise ValueError("paired outcomes must have the same length")
    n = len(base)
    if n == 0:
        return None
    b = sum(1 for x, y in zip(base, other) if x and not y)
    c = sum(1 for x, y in zip(base, other) if y and not x)
    delta = (c - b) / n
    diffs = [int(y) - int(x) for x, y in zip(base, other)]
    ci = _bootstrap_mean(diffs, seed)
    return Comparison(delta=delta, ci=ci, p_value=mcnemar_exact(b, c), n=n, test="mcnemar")


def _bootstrap_mean(diffs: list[int] | list[float], seed: int) -> tuple[float, float]:
    if not any(diffs):
        return 0.0, 0.0
    n = len(diffs)
    return _quantiles([sum(diffs[i] for i in sample) / n for sample in _resamples(n, seed)])


Statistic = Callable[[list[int]], float | None]
"""A statistic of one model computed on a list of item indices (a bootstrap resample)."""


def bootstrap(stat: Statistic, n: int, *, seed: int = 0) -> tuple[float, float] | None:
    """Percentile bootstrap 95% interval of ``stat`` over ``n`` items resampled with replacement; a
    resample on which ``stat`` is undefined (None) is skipped. None when n is 0 or no resample is defined.
    Zero-width when every resample gives the same value (all items alike): widen it with a score interval
    where the statistic is a rate (:func:`wilson`, :func:`newcombe`)."""
    if n == 0:
        return None
    values = [v for v in (stat(sample) for sample in _resamples(n, seed)) if v is not None]
    return _quantiles(values) if values else None


def paired_bootstrap(base: Statistic, other: Statistic, n: int, *, seed: int = 0) -> Comparison | None:
    """Paired bootstrap of ``other(items) - base(items)``: items are resampled together for both models.

    The p-value is the share of centred resampled differences at least as far from 0 as the observed
    one (two-sided); a statistic undefined on a resample (an empty denominator) skips that resample.
    """
    if n == 0:
        return None
    everything = list(range(n))
    b0, o0 = base(everything), other(everything)
    if b0 is None or o0 is None:
        return None
    delta = o0 - b0
    deltas = []
    for sample in _resamples(n, seed):
        b, o = base(sample), other(sample)
        if b is not None and o is not None:
            deltas.append(o - b)
    if not deltas:
        return Comparison(delta=delta, ci=(delta, delta), p_value=None, n=n, test="paired_bootstrap")
    extreme = sum(1 for d in deltas if abs(d - delta) >= abs(delta) - 1e-12)
    p = 1.0 if delta == 0 else min(1.0, (1 + extreme) / (1 + len(deltas)))
    return Comparison(delta=delta, ci=_quantiles(deltas), p_value=p, n=n, test="paired_bootstrap")
