"""LatencyHistogram: HDR precision, lossless merge, encode/decode, clamping."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
from hdrh.histogram import HdrHistogram
from hypothesis import given, settings, strategies as st

from harness.metrics import HIGHEST_US, LatencyHistogram, percentile_key

PS = (0.0, 1.0, 25.0, 50.0, 90.0, 99.0, 99.9, 100.0)


def _hist_us(values: list[int]) -> LatencyHistogram:
    h = LatencyHistogram()
    for v in values:
        h.record_us(v)
    return h


def test_percentiles_of_known_data_within_hdr_precision() -> None:
    """Percentiles of 1..100000 µs match the exact percentiles within 0.1 %."""
    values = np.arange(1, 100_001)
    h = LatencyHistogram()
    h.record_many_ns(values * 1000)
    assert h.count == 100_000
    for p in (50.0, 90.0, 99.0, 99.9):
        exact_ms = float(np.percentile(values, p, method="inverted_cdf")) / 1000
        got = h.percentile_ms(p)
        assert got is not None
        assert got == pytest.approx(exact_ms, rel=1e-3, abs=0.001)
    assert h.min_ms() == 0.001
    assert h.max_ms() == pytest.approx(100.0, rel=1e-3)
    assert h.mean_ms() == pytest.approx(50.0005, rel=1e-3)


def test_reads_equal_the_hdrhistogram_library() -> None:
    """Vectorized percentiles, mean, min and max equal HdrHistogram's own answers."""
    rng = np.random.default_rng(7)
    values = np.concatenate([rng.integers(1, 5000, 3000), rng.lognormal(12, 2, 3000).astype(np.int64) + 1])
    values = np.clip(values, 1, HIGHEST_US)
    ref = HdrHistogram(1, HIGHEST_US, 3)
    for v in values:
        ref.record_value(int(v))
    h = _hist_us([int(v) for v in values])
    for p in PS:
        assert h.percentile_ms(p) == ref.get_value_at_percentile(p) / 1000
    assert h.mean_ms() == pytest.approx(ref.get_mean_value() / 1000)
    assert h.max_ms() == ref.get_max_value() / 1000
    assert h.min_ms() == ref.get_min_value() / 1000


def test_record_many_equals_record_one_by_one() -> None:
    """Recording an array at once fills exactly the buckets that per-value recording fills."""
    rng = np.random.default_rng(3)
    ns = rng.integers(-5_000, 4 * 3_600 * 10**9, 5000)
    one = LatencyHistogram()
    for v in ns:
        one.record_ns(int(v))
    many = LatencyHistogram()
    many.record_many_ns(ns)
    assert many == one
    assert many.count == one.count == 5000
    as_float = LatencyHistogram()
    as_float.record_many_ms(ns / 1e6)
    assert as_float == one


def test_percentiles_ms_keys() -> None:
    """percentiles_ms keys are "p" plus the trimmed number."""
    h = _hist_us([1000, 2000, 3000])
    assert list(h.percentiles_ms([50, 90, 99, 99.9])) == ["p50", "p90", "p99", "p99.9"]
    assert percentile_key(99.99) == "p99.99"
    assert percentile_key(50.0) == "p50"


def test_empty_histogram_reads_none() -> None:
    """An empty histogram answers None for every statistic instead of 0 or NaN."""
    h = LatencyHistogram()
    assert h.count == 0
    assert h.percentile_ms(99) is None
    assert h.mean_ms() is None
    assert h.max_ms() is None
    assert h.min_ms() is None
    assert set(h.percentiles_ms([50, 99]).values()) == {None}


@settings(max_examples=60, deadline=None)
@given(
    values=st.lists(st.integers(min_value=1, max_value=HIGHEST_US), min_size=1, max_size=300),
    k=st.integers(min_value=1, max_value=6),
    data=st.data(),
)
def test_merge_of_split_histograms_equals_one_histogram(
    values: list[int], k: int, data: st.DataObject
) -> None:
    """Splitting values into k histograms and merging gives the same counts at every percentile."""
    owners = data.draw(st.lists(st.integers(0, k - 1), min_size=len(values), max_size=len(values)))
    parts = [LatencyHistogram() for _ in range(k)]
    for v, owner in zip(values, owners, strict=True):
        parts[owner].record_us(v)
    merged = LatencyHistogram()
    for part in parts:
        merged.merge(part)
    whole = _hist_us(values)
    assert merged == whole
    assert merged.count == whole.count
    for p in PS:
        assert merged.percentile_ms(p) == whole.percentile_ms(p)
    assert merged.min_ms() == whole.min_ms()
    assert merged.max_ms() == whole.max_ms()
    assert merged.mean_ms() == whole.mean_ms()


def test_merge_into_empty_keeps_minimum() -> None:
    """Merging into an empty histogram keeps the other's minimum (HdrHistogram.add alone would not)."""
    merged = LatencyHistogram()
    merged.merge(_hist_us([5000, 7000]))
    assert merged.min_ms() == 5.0
    assert merged._h.get_min_value() == 5000


def test_encode_decode_round_trip() -> None:
    """decode(encode(h)) equals h, and the encoding is a compact ASCII string."""
    h = _hist_us([1, 2, 500, 12_345, 3_000_000, HIGHEST_US])
    encoded = h.encode()
    assert isinstance(encoded, str)
    assert len(encoded) < 400
    back = LatencyHistogram.decode(encoded)
    assert back == h
    assert back.count == h.count
    assert back.percentiles_ms(PS) == h.percentiles_ms(PS)
    assert back.min_ms() == h.min_ms()
    assert back.max_ms() == h.max_ms()
    assert LatencyHistogram.decode(LatencyHistogram().encode()).count == 0


def test_decode_rejects_another_configuration() -> None:
    """A histogram encoded with another range or precision is refused."""
    other = HdrHistogram(1, 60_000_000, 2)
    other.record_value(10)
    with pytest.raises(ValueError, match="expected"):
        LatencyHistogram.decode(other.encode())


def test_pickles_through_its_encoding() -> None:
    """A histogram survives pickling (it crosses process boundaries)."""
    h = _hist_us([10, 20, 30])
    assert pickle.loads(pickle.dumps(h)) == h


def test_clamping() -> None:
    """Values below 1 µs count as 1 µs and values above an hour as an hour; none are dropped."""
    h = LatencyHistogram()
    h.record_ns(0)
    h.record_ns(-250)
    h.record_ns(999)
    h.record_us(0.3)
    assert h.count == 4
    assert h.percentile_ms(100) == 0.001
    big = LatencyHistogram()
    big.record_ns(10 * 3_600 * 10**9)
    big.record_us(HIGHEST_US * 5)
    assert big.count == 2
    top = big.percentile_ms(50)
    assert top is not None
    assert HIGHEST_US / 1000 <= top <= HIGHEST_US / 1000 * 1.001
