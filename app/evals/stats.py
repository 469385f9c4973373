"""Confidence intervals and paired significance for accuracy comparisons."""

import math


def wilson_interval(correct: int, n: int, z: float = 1.959964) -> tuple[float, float]:
    """95% Wilson score interval: well behaved near 0 and 1 and for small n, unlike the
    normal approximation."""
    if n == 0:
        return (0.0, 1.0)
    return _wilson(correct / n, n, z)


def mcnemar_exact(b: int, c: int) -> float:
    """Two-sided exact McNemar p-value from the discordant pairs: b = only the first variant
    right, c = only the second right. Under the null each discordant pair is a fair coin."""
    n = b + c
    if n == 0:
        return 1.0
    k = min(b, c)
    tail = sum(math.comb(n, i) for i in range(k + 1)) / 2**n
    return min(1.0, 2 * tail)


def percentile(values: list[float], q: float) -> float:
    """Linear-interpolated percentile (q in 0..100), as numpy's default."""
    if not values:
        return 0.0
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100
    lo, hi = math.floor(pos), math.ceil(pos)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def paired_difference_interval(
    both: float, only_first: float, only_second: float, neither: float, z: float
) -> tuple[float, float, float]:
    """(difference, lower, upper) of first accuracy minus second accuracy on the same
    examples: Newcombe's hybrid score interval for paired proportions (1998, with the
    continuity-corrected correlation, which keeps the interval from collapsing when the two
    agree on every example). Counts may be fractional (see examples_to_decide)."""
    n = both + only_first + only_second + neither
    if n == 0:
        return (0.0, -1.0, 1.0)
    p1, p2 = (both + only_first) / n, (both + only_second) / n
    l1, u1 = _wilson(p1, n, z)
    l2, u2 = _wilson(p2, n, z)
    margins = (
        (both + only_first)
        * (only_second + neither)
        * (both + only_second)
        * (only_first + neither)
    )
    phi = (
        max(both * neither - only_first * only_second - n / 2, 0.0) / math.sqrt(margins)
        if margins > 0
        else 0.0
    )
    below = math.sqrt(max((p1 - l1) ** 2 - 2 * phi * (p1 - l1) * (u2 - p2) + (u2 - p2) ** 2, 0))
    above = math.sqrt(max((u1 - p1) ** 2 - 2 * phi * (u1 - p1) * (p2 - l2) + (p2 - l2) ** 2, 0))
    diff = p1 - p2
    return (diff, max(-1.0, diff - below), min(1.0, diff + above))


def _wilson(p: float, n: float, z: float) -> tuple[float, float]:
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(max(p * (1 - p), 0.0) / n + z * z / (4 * n * n)) / denom
    return (max(0.0, centre - half), min(1.0, centre + half))


def examples_to_decide(
    counts: tuple[int, int, int, int], margin: float, z: float, cap: int = 100_000
) -> int | None:
    """About how many examples would settle whether the first variant is within `margin` of
    the second (its interval entirely above -margin, or entirely below), if the four paired
    counts (both right, only first, only second, neither) keep their proportions. None: not
    even `cap` would (the observed difference sits on the margin)."""
    n = sum(counts)
    if n == 0:
        return None

    def settled(m: int) -> bool:
        _, low, high = paired_difference_interval(*(c * m / n for c in counts), z)
        return low > -margin or high < -margin

    if not settled(cap):
        return None
    lo, hi = n, cap  # settled(hi); the interval narrows as m grows
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if settled(mid) else (mid, hi)
    return hi
