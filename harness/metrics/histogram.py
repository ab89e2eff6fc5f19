"""A latency histogram in microseconds that merges losslessly across processes.

``LatencyHistogram`` wraps ``hdrh.histogram.HdrHistogram`` with one fixed configuration for
every histogram the harness makes: values in **microseconds**, trackable range 1 µs .. 1 hour,
3 significant digits (a recorded value is off by at most 0.1 %). Because every histogram has
the same layout, merging is an element-wise sum of the counts arrays: a summary computed from
raw records and one merged from worker histograms give the same percentiles.

Values outside the range are clamped, never dropped: anything below 1 µs (including zero and
negative differences from clock jitter) counts as 1 µs, anything above an hour as an hour.

Reading (percentiles, mean, min, max) is vectorized over the counts array with numpy, using
the library's definitions: a percentile is the *highest* value equivalent to the bucket where
the cumulative count first reaches ``round(p/100 * count)``; the mean uses each bucket's
median equivalent value. Empty histograms answer ``None``, never 0 or NaN.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from typing import Any, Final

import numpy as np
import numpy.typing as npt
from hdrh.histogram import HdrHistogram

LOWEST_US: Final = 1
HIGHEST_US: Final = 3_600_000_000  # one hour
SIGNIFICANT_FIGURES: Final = 3

DEFAULT_PERCENTILES: Final = (50.0, 90.0, 99.0, 99.9)


def percentile_key(p: float) -> str:
    """The summary key of a percentile: ``50 -> "p50"``, ``99.9 -> "p99.9"``."""
    text = f"{float(p):.6f}".rstrip("0").rstrip(".")
    return f"p{text}"


class _Layout:
    """Per-index value tables of the one histogram configuration, computed once (vectorized).

    For counts index ``i``: ``lowest[i]`` is the smallest value in its bucket, ``highest[i]``
    the largest, ``median[i]`` the value the library uses for the mean.
    """

    __slots__ = ("counts_len", "half_count", "half_count_magnitude", "highest", "lowest", "mask", "median")

    def __init__(self) -> None:
        proto = HdrHistogram(LOWEST_US, HIGHEST_US, SIGNIFICANT_FIGURES)
        assert proto.unit_magnitude == 0  # LOWEST_US == 1: the formulas below rely on it
        self.counts_len: int = proto.counts_len
        self.half_count_magnitude: int = proto.sub_bucket_half_count_magnitude
        self.half_count: int = proto.sub_bucket_half_count
        self.mask: int = proto.sub_bucket_mask
        index = np.arange(self.counts_len, dtype=np.int64)
        bucket = (index >> self.half_count_magnitude) - 1
        sub = (index & (self.half_count - 1)) + self.half_count
        first = bucket < 0
        sub[first] -= self.half_count
        bucket[first] = 0
        self.lowest: npt.NDArray[np.int64] = sub << bucket
        size = np.left_shift(np.int64(1), bucket)
        self.highest: npt.NDArray[np.int64] = self.lowest + size - 1
        self.median: npt.NDArray[np.int64] = self.lowest + (size >> 1)

    def index_of(self, values_us: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
        """Counts indices of values already clamped to the range (the library's formula)."""
        # bit length of (v | mask); exact via frexp because values < 2**53
        _, bit_length = np.frexp((values_us | self.mask).astype(np.float64))
        bucket = bit_length.astype(np.int64) - (self.half_count_magnitude + 1)
        sub = values_us >> bucket
        return ((bucket + 1) << self.half_count_magnitude) + sub - self.half_count


@functools.cache
def _layout() -> _Layout:
    """The tables, built on first use (a few ms) rather than at import."""
    return _Layout()


class LatencyHistogram:
    """HDR histogram of latencies in µs (1 µs .. 1 h, 3 significant digits); merge, encode, decode."""

    __slots__ = ("_counts", "_h")

    def __init__(self) -> None:
        self._h = HdrHistogram(LOWEST_US, HIGHEST_US, SIGNIFICANT_FIGURES)
        self._counts = np.ctypeslib.as_array(self._h.counts)  # a view: writes go to the histogram

    # -- recording -------------------------------------------------------------------------

    def record_us(self, value_us: float) -> None:
        """Record one value in µs, clamped to 1 µs .. 1 h."""
        v = int(value_us)
        if v < LOWEST_US:
            v = LOWEST_US
        elif v > HIGHEST_US:
            v = HIGHEST_US
        self._h.record_value(v)

    def record_ns(self, value_ns: int) -> None:
        """Record one value in ns (truncated to whole µs, clamped to 1 µs .. 1 h)."""
        self.record_us(value_ns // 1000)

    def record_many_ns(self, values_ns: npt.ArrayLike) -> None:
        """Record an array of ns values at once (NaN skipped); same result as ``record_ns`` per value."""
        arr = np.asarray(values_ns)
        if arr.size == 0:
            return
        if arr.dtype.kind == "f":
            arr = arr[~np.isnan(arr)]
            us = np.floor_divide(np.clip(arr, -1.0, float(HIGHEST_US) * 1000 + 1000), 1000).astype(np.int64)
        else:
            us = np.floor_divide(arr.astype(np.int64), 1000)
        self._record_many_us(us)

    def record_many_ms(self, values_ms: npt.ArrayLike) -> None:
        """Record an array of ms values (as returned by ``harness.results.derive``), NaN skipped.

        Each value is first rounded to whole ns, then truncated to µs like ``record_ns``, so a
        duration recorded here lands in the same bucket as the same duration recorded in ns.
        """
        arr = np.asarray(values_ms, dtype=np.float64)
        self.record_many_ns(np.rint(arr * 1e6))

    def _record_many_us(self, us: npt.NDArray[np.int64]) -> None:
        if us.size == 0:
            return
        us = np.clip(us, LOWEST_US, HIGHEST_US)
        layout = _layout()
        counts = np.bincount(layout.index_of(us), minlength=layout.counts_len)
        self._counts += counts.astype(self._counts.dtype)
        h = self._h
        h.total_count += int(us.size)
        h.min_value = min(h.min_value, int(us.min()))
        h.max_value = max(h.max_value, int(us.max()))

    # -- merging and shipping --------------------------------------------------------------

    def merge(self, other: LatencyHistogram) -> None:
        """Add every count of ``other`` into this histogram (lossless: same layout)."""
        if other.count == 0:
            return
        was_empty = self.count == 0
        self._h.add(other._h)
        if was_empty:  # HdrHistogram.add takes min(0, ...) when self is empty
            self._h.min_value = other._h.min_value

    def encode(self) -> str:
        """HdrHistogram's compressed, base64 V2 encoding (what workers ship to the parent)."""
        return str(self._h.encode().decode("ascii"))

    @classmethod
    def decode(cls, encoded: str | bytes) -> LatencyHistogram:
        """The histogram ``encode`` produced; ``ValueError`` if it has another configuration."""
        h = HdrHistogram.decode(encoded.encode("ascii") if isinstance(encoded, str) else encoded)
        if (h.lowest_trackable_value, h.highest_trackable_value, h.significant_figures) != (
            LOWEST_US,
            HIGHEST_US,
            SIGNIFICANT_FIGURES,
        ):
            raise ValueError(
                "encoded histogram has range "
                f"{h.lowest_trackable_value}..{h.highest_trackable_value} µs and "
                f"{h.significant_figures} digits; expected {LOWEST_US}..{HIGHEST_US} µs and "
                f"{SIGNIFICANT_FIGURES}"
            )
        hist = cls.__new__(cls)
        hist._h = h
        hist._counts = np.ctypeslib.as_array(h.counts)
        return hist

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        # ctypes counts do not pickle; ship the compact encoding instead
        return (LatencyHistogram.decode, (self.encode(),))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, LatencyHistogram):
            return NotImplemented
        return bool(np.array_equal(self._counts, other._counts))

    __hash__ = None  # type: ignore[assignment]  # mutable

    def __repr__(self) -> str:
        return f"LatencyHistogram(count={self.count}, p50_ms={self.percentile_ms(50)})"

    # -- reading ---------------------------------------------------------------------------

    @property
    def count(self) -> int:
        """Number of recorded values (a property: ``if hist.count:`` reads naturally)."""
        return int(self._h.total_count)

    def counts_array(self) -> npt.NDArray[np.uint64]:
        """A read-only copy of the raw counts, indexed like the HDR layout (for tests and tools)."""
        return self._counts.copy()

    def _percentiles_us(self, ps: list[float]) -> list[int | None]:
        total = int(self._counts.sum())
        if total == 0:
            return [None] * len(ps)
        layout = _layout()
        cumulative = np.cumsum(self._counts, dtype=np.int64)
        out: list[int | None] = []
        for p in ps:
            target = max(int(min(p, 100.0) * total / 100 + 0.5), 1)
            i = int(np.searchsorted(cumulative, target, side="left"))
            out.append(int(layout.highest[i] if p else layout.lowest[i]))
        return out

    def percentile_ms(self, p: float) -> float | None:
        """The value at percentile ``p`` (0..100) in ms; ``None`` when empty."""
        (us,) = self._percentiles_us([p])
        return None if us is None else us / 1000

    def percentiles_ms(self, ps: Iterable[float] = DEFAULT_PERCENTILES) -> dict[str, float | None]:
        """Several percentiles in ms, keyed ``"p50"``, ``"p99.9"``…; values ``None`` when empty."""
        plist = [float(p) for p in ps]
        return {
            percentile_key(p): (None if us is None else us / 1000)
            for p, us in zip(plist, self._percentiles_us(plist), strict=True)
        }

    def mean_ms(self) -> float | None:
        """Mean in ms from bucket medians (as HdrHistogram computes it); ``None`` when empty."""
        total = int(self._counts.sum())
        if total == 0:
            return None
        weighted = float(np.dot(self._counts.astype(np.float64), _layout().median.astype(np.float64)))
        return weighted / total / 1000

    def max_ms(self) -> float | None:
        """Largest recorded value in ms (highest value of its bucket); ``None`` when empty."""
        nonzero = np.flatnonzero(self._counts)
        return None if nonzero.size == 0 else int(_layout().highest[nonzero[-1]]) / 1000

    def min_ms(self) -> float | None:
        """Smallest recorded value in ms (lowest value of its bucket); ``None`` when empty."""
        nonzero = np.flatnonzero(self._counts)
        return None if nonzero.size == 0 else int(_layout().lowest[nonzero[0]]) / 1000

    def stats_ms(self, ps: Iterable[float] = DEFAULT_PERCENTILES) -> dict[str, float | int | None]:
        """``{"count", "p50", "p90", "p99", "p99.9", "mean", "max"}`` in ms, ready for JSON."""
        mean = self.mean_ms()
        out: dict[str, float | int | None] = {"count": self.count}
        out.update(self.percentiles_ms(ps))
        out["mean"] = None if mean is None else round(mean, 3)
        out["max"] = self.max_ms()
        return out

    @classmethod
    def from_ms(cls, values_ms: npt.ArrayLike) -> LatencyHistogram:
        """A histogram of an array of ms values (NaN skipped)."""
        h = cls()
        h.record_many_ms(values_ms)
        return h
