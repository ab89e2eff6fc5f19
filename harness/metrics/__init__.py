"""Accumulators that merge across worker processes and Locust workers: HDR latency histograms."""

from harness.metrics.histogram import (
    DEFAULT_PERCENTILES,
    HIGHEST_US,
    LOWEST_US,
    SIGNIFICANT_FIGURES,
    LatencyHistogram,
    percentile_key,
)

__all__ = [
    "DEFAULT_PERCENTILES",
    "HIGHEST_US",
    "LOWEST_US",
    "SIGNIFICANT_FIGURES",
    "LatencyHistogram",
    "percentile_key",
]
