"""Compare a run with a baseline run: per-metric deltas and a noise-aware regression verdict.

Metrics, each with the direction that is worse:

  latency_ms p50/p90/p99   ok requests, from the intended send time     higher is worse
  ttft_ms p50/p90/p99      from the intended send time                  higher is worse
  itl_ms p50/p90/p99       inter-token latency                          higher is worse
  error_rate               (error + timeout) / planned                  higher is worse
  tokens_per_s             ok output tokens / load duration             lower is worse

The values shown are the summary's (percentiles from ``LatencyHistogram``; definitions in
``harness.results.derive``). The noise around the difference ``current - baseline`` is a
seeded bootstrap: each run is resampled independently ``resamples`` times and the
``confidence`` interval of the difference is read from the resampled differences.

  percentiles  The r-th smallest of n values drawn with replacement from n sorted values is
               the value at index ``floor(n * U)``, ``U ~ Beta(r, n - r + 1)`` (the r-th order
               statistic of n uniforms), with ``r = max(round(q * n), 1)`` as in the histogram.
               So each resample costs one Beta draw: the exact bootstrap distribution without
               materialising B x n resamples.
  ITL          The values of one request are correlated (one stream, one server), so the
               resampling unit is the request: each replicate weights every request by a
               Poisson(1) count and takes the weighted percentile of the ITL values.
               Resampling single ITL values would give intervals that are too narrow.
  error rate   errors* ~ Binomial(n, errors / n).
  tokens/s     the token sum of n requests drawn with replacement, as multinomial counts over
               the distinct per-request token counts (0 for requests that did not succeed).

Bounds: ``resamples`` must lie in 100..100,000; a metric with more than ``max_samples`` values
(ITL: more than ``MAX_CLUSTERS`` requests, whole requests kept) is first subsampled without
replacement (seeded). Subsampling widens the interval (it is the interval of a smaller sample),
so it can hide a small regression but never invent one.

What the interval does not cover: variance between runs (another machine load, another mock
seed). It is the noise of a finite sample within each run; ``tolerance`` is there to absorb
the rest, and ``harness trend`` compares with the median of several runs.

Verdict per metric, with ``band = tolerance * |baseline|`` (default 5 %; for the error rate at
least 0.1 percentage point, so a clean baseline does not make one error a regression):

  regressed   the whole interval lies on the worse side, beyond the band
  improved    the whole interval lies on the better side, beyond the band
  unchanged   otherwise: the difference is within noise or within tolerance
  n/a         one of the runs has no value (e.g. no TTFT in a non-streaming run)

The comparison fails (``harness compare`` exits 5, THRESHOLDS_FAILED) when any metric regressed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

from harness.errors import InputError
from harness.metrics.histogram import LatencyHistogram
from harness.report import Run, load_run, write_text
from harness.results import derive
from harness.results.rundir import write_json

COMPARE_SCHEMA_VERSION: Final = 1
COMPARE_JSON: Final = "compare.json"
COMPARE_MD: Final = "compare.md"

DEFAULT_TOLERANCE: Final = 0.05
DEFAULT_CONFIDENCE: Final = 0.95
DEFAULT_RESAMPLES: Final = 2000
MIN_RESAMPLES: Final = 100
MAX_RESAMPLES: Final = 100_000
DEFAULT_MAX_SAMPLES: Final = 1_000_000
MAX_DISTINCT: Final = 4096  # distinct token counts drawn multinomially; more are binned
ERROR_RATE_MIN_BAND: Final = 0.001
MAX_CLUSTERS: Final = 2000  # requests kept for the per-request ITL bootstrap
_CHUNK_CELLS: Final = 4_000_000  # replicates x values handled at once (memory bound)


@dataclass(frozen=True, slots=True)
class Metric:
    """One compared metric: its key in compare.json, what it samples, and which way is worse."""

    key: str
    source: str  # latency | ttft | itl | error_rate | tokens_per_s
    unit: str
    higher_is_worse: bool
    q: float | None = None  # percentile, for the latency-like sources


METRICS: Final = (
    *(Metric(f"latency_ms.p{q:g}", "latency", "ms", True, q) for q in (50.0, 90.0, 99.0)),
    *(Metric(f"ttft_ms.p{q:g}", "ttft", "ms", True, q) for q in (50.0, 90.0, 99.0)),
    *(Metric(f"itl_ms.p{q:g}", "itl", "ms", True, q) for q in (50.0, 90.0, 99.0)),
    Metric("error_rate", "error_rate", "fraction", True),
    Metric("tokens_per_s", "tokens_per_s", "tokens/s", False),
)


# -- bootstrap draws -------------------------------------------------------------------------


def _subsample(
    values: npt.NDArray[np.float64], max_samples: int, rng: np.random.Generator
) -> npt.NDArray[np.float64]:
    if values.size <= max_samples:
        return values
    return rng.choice(values, size=max_samples, replace=False)


def bootstrap_percentile(
    values: npt.ArrayLike,
    q: float,
    resamples: int,
    rng: np.random.Generator,
    max_samples: int = DEFAULT_MAX_SAMPLES,
) -> npt.NDArray[np.float64]:
    """``resamples`` bootstrap replicates of the ``q``-th percentile (0..100) of ``values``.

    Exact bootstrap via order statistics (module docstring); empty input gives an empty array.
    """
    x = np.sort(_subsample(np.asarray(values, dtype=np.float64), max_samples, rng))
    n = x.size
    if n == 0:
        return np.empty(0)
    r = min(max(int(q / 100.0 * n + 0.5), 1), n)
    u = rng.beta(r, n - r + 1, size=resamples)
    return x[np.minimum((u * n).astype(np.int64), n - 1)]


def _significant(x: npt.NDArray[np.float64], digits: int = 3) -> npt.NDArray[np.float64]:
    """Values rounded to ``digits`` significant digits (the histogram's precision)."""
    out = x.copy()
    nonzero = x != 0
    scale = 10.0 ** (digits - 1 - np.floor(np.log10(np.abs(x[nonzero]))))
    out[nonzero] = np.round(x[nonzero] * scale) / scale
    return out


def bootstrap_clustered_percentiles(
    values: npt.ArrayLike,
    lengths: npt.ArrayLike,
    qs: tuple[float, ...],
    resamples: int,
    rng: np.random.Generator,
    max_clusters: int = MAX_CLUSTERS,
) -> npt.NDArray[np.float64]:
    """Bootstrap replicates (shape ``len(qs) x resamples``) of percentiles of values that come in
    clusters: ``values`` holds ``lengths[i]`` consecutive values of cluster (request) i.

    Each replicate weights every cluster by a Poisson(1) count (the Poisson bootstrap: draws
    with replacement, without fixing the total) and takes the percentile of all values so
    weighted, with the histogram's rank rule. Values are first rounded to 3 significant digits
    (the histogram's precision) so a replicate is one small matrix product: per-cluster
    histograms times counts. More than ``max_clusters`` clusters are subsampled first.
    """
    x = np.asarray(values, dtype=np.float64)
    sizes = np.asarray(lengths, dtype=np.int64)
    if x.size == 0:
        return np.empty((len(qs), 0))
    cluster = np.repeat(np.arange(sizes.size), sizes)
    present = np.flatnonzero(sizes > 0)
    if present.size > max_clusters:
        keep = np.isin(cluster, rng.choice(present, size=max_clusters, replace=False))
        x, cluster = x[keep], cluster[keep]
    _, cluster = np.unique(cluster, return_inverse=True)
    levels, level = np.unique(_significant(x), return_inverse=True)
    m, k = int(cluster.max()) + 1, levels.size
    per_cluster = np.bincount(cluster * k + level, minlength=m * k).reshape(m, k).astype(np.float32)
    out = np.empty((len(qs), resamples))
    chunk = max(1, _CHUNK_CELLS // max(m, k))
    for start in range(0, resamples, chunk):
        b = min(chunk, resamples - start)
        weights = rng.poisson(1.0, size=(b, m)).astype(np.float32)
        cumulative = np.cumsum(weights @ per_cluster, axis=1)
        total = cumulative[:, -1]
        for j, q in enumerate(qs):
            rank = np.maximum(np.floor(q / 100.0 * total + 0.5), 1)
            idx = (cumulative < rank[:, None] - 0.5).sum(axis=1)
            out[j, start : start + b] = levels[np.minimum(idx, k - 1)]
    return out


def bootstrap_rate(
    events: int, trials: int, resamples: int, rng: np.random.Generator
) -> npt.NDArray[np.float64]:
    """Bootstrap replicates of the proportion ``events / trials`` (binomial resampling)."""
    if trials <= 0:
        return np.empty(0)
    return rng.binomial(trials, events / trials, size=resamples) / trials


def bootstrap_sum(values: npt.ArrayLike, resamples: int, rng: np.random.Generator) -> npt.NDArray[np.float64]:
    """Bootstrap replicates of ``sum(values)`` (n draws with replacement), as multinomial counts.

    More than ``MAX_DISTINCT`` distinct values are binned into equal-count groups of sorted
    values, each replaced by its mean (the sum is unchanged; the spread barely).
    """
    x = np.asarray(values, dtype=np.float64)
    n = x.size
    if n == 0:
        return np.empty(0)
    levels, counts = np.unique(x, return_counts=True)
    if levels.size > MAX_DISTINCT:
        groups = np.array_split(np.sort(x), MAX_DISTINCT)
        levels = np.array([g.mean() for g in groups])
        counts = np.array([g.size for g in groups])
    draws = rng.multinomial(n, counts / n, size=resamples)
    return draws @ levels


# -- per-run samples -------------------------------------------------------------------------


@dataclass(slots=True)
class _Samples:
    """The raw material of every metric for one run, computed once."""

    latency: npt.NDArray[np.float64]
    ttft: npt.NDArray[np.float64]
    itl: npt.NDArray[np.float64]
    itl_lengths: npt.NDArray[np.int64]  # ITL values per record, in record order
    planned: int
    failed: int
    tokens: npt.NDArray[np.float64]  # per planned request: tokens_out if ok, else 0
    duration_s: float
    _itl_cache: dict[tuple[int, float], npt.NDArray[np.float64]] = field(default_factory=dict)

    @classmethod
    def of(cls, run: Run) -> _Samples:
        df = run.records
        counts = derive.outcome_counts(df)
        tokens, valid = derive.int_column(df, "tokens_out")
        per_request = np.where(derive.ok_mask(df) & valid, tokens, 0).astype(np.float64)
        itl = derive.itl_ms(df)
        token_counts = pc.list_value_length(
            pa.array(df["token_ns"], type=pa.list_(pa.int64()), from_pandas=True)
        )
        lengths = np.maximum(token_counts.fill_null(0).to_numpy(zero_copy_only=False).astype(np.int64) - 1, 0)
        if int(lengths.sum()) != itl.size:  # cannot tell the requests apart: treat values as independent
            lengths = np.ones(itl.size, dtype=np.int64)
        return cls(
            latency=derive.latency_ms(df, "intended").to_numpy(dtype=np.float64),
            ttft=derive.ttft_ms(df, "intended").to_numpy(dtype=np.float64),
            itl=itl,
            itl_lengths=lengths,
            planned=counts["planned"],
            failed=counts["error"] + counts["timeout"],
            tokens=per_request,
            duration_s=run.duration_s,
        )

    def value(self, m: Metric) -> float | None:
        if m.q is not None:
            return LatencyHistogram.from_ms(getattr(self, m.source)).percentile_ms(m.q)
        if m.source == "error_rate":
            return self.failed / self.planned if self.planned else None
        return float(self.tokens.sum()) / self.duration_s if self.duration_s > 0 and self.planned else None

    def size(self, m: Metric) -> int:
        return int(getattr(self, m.source).size) if m.q is not None else self.planned

    def subsampled(self, m: Metric, max_samples: int) -> bool:
        if m.source == "itl":
            return int((self.itl_lengths > 0).sum()) > MAX_CLUSTERS
        return m.q is not None and self.size(m) > max_samples

    def replicates(
        self, m: Metric, resamples: int, rng: np.random.Generator, max_samples: int
    ) -> npt.NDArray[np.float64]:
        if m.source == "itl" and m.q is not None:
            key = (resamples, m.q)
            if key not in self._itl_cache:  # one pass gives every ITL percentile
                qs = tuple(x.q for x in METRICS if x.source == "itl" and x.q is not None)
                reps = bootstrap_clustered_percentiles(self.itl, self.itl_lengths, qs, resamples, rng)
                self._itl_cache.update({(resamples, q): row for q, row in zip(qs, reps, strict=True)})
            return self._itl_cache[key]
        if m.q is not None:
            return bootstrap_percentile(getattr(self, m.source), m.q, resamples, rng, max_samples)
        if m.source == "error_rate":
            return bootstrap_rate(self.failed, self.planned, resamples, rng)
        if self.duration_s <= 0:
            return np.empty(0)
        return bootstrap_sum(self.tokens, resamples, rng) / self.duration_s


def judge_delta(
    baseline: float,
    ci_low: float,
    ci_high: float,
    *,
    higher_is_worse: bool,
    tolerance: float,
    min_band: float = 0.0,
) -> str:
    """``regressed``, ``improved`` or ``unchanged`` for an interval of ``current - baseline``."""
    band = max(tolerance * abs(baseline), min_band)
    worse_low, worse_high = (ci_low, ci_high) if higher_is_worse else (-ci_high, -ci_low)
    if worse_low > band:
        return "regressed"
    if worse_high < -band:
        return "improved"
    return "unchanged"


def _pct(delta: float | None, base: float | None) -> float | None:
    if delta is None or base is None or base == 0:
        return None
    return delta / abs(base)


def compare_runs(
    run: Run | Path,
    baseline: Run | Path,
    *,
    tolerance: float = DEFAULT_TOLERANCE,
    confidence: float = DEFAULT_CONFIDENCE,
    resamples: int = DEFAULT_RESAMPLES,
    max_samples: int = DEFAULT_MAX_SAMPLES,
    seed: int = 0,
) -> dict[str, Any]:
    """The comparison of ``run`` against ``baseline`` as a JSON-ready dict (compare.json)."""
    if not MIN_RESAMPLES <= resamples <= MAX_RESAMPLES:
        raise InputError(
            f"resamples must lie in {MIN_RESAMPLES}..{MAX_RESAMPLES}, got {resamples}",
            "pass --resamples within the bounds (2000 is plenty for 95 % intervals)",
        )
    if not 0.5 <= confidence < 1.0:
        raise InputError(f"confidence must lie in [0.5, 1), got {confidence}", "pass e.g. --confidence 0.95")
    if tolerance < 0:
        raise InputError(f"tolerance must not be negative, got {tolerance}", "pass e.g. --tolerance 0.05")
    if max_samples < 1000:
        raise InputError(
            f"max_samples must be at least 1000, got {max_samples}", "pass a larger --max-samples"
        )
    cur_run = run if isinstance(run, Run) else load_run(run)
    base_run = baseline if isinstance(baseline, Run) else load_run(baseline)
    cur, base = _Samples.of(cur_run), _Samples.of(base_run)
    alpha = 1.0 - confidence

    rows: list[dict[str, Any]] = []
    for i, m in enumerate(METRICS):
        b_value, c_value = base.value(m), cur.value(m)
        row: dict[str, Any] = {
            "metric": m.key,
            "unit": m.unit,
            "worse": "higher" if m.higher_is_worse else "lower",
            "baseline": b_value,
            "current": c_value,
            "n_baseline": base.size(m),
            "n_current": cur.size(m),
            "subsampled": base.subsampled(m, max_samples) or cur.subsampled(m, max_samples),
        }
        b_reps = base.replicates(m, resamples, np.random.default_rng([seed, i, 0]), max_samples)
        c_reps = cur.replicates(m, resamples, np.random.default_rng([seed, i, 1]), max_samples)
        if b_value is None or c_value is None or b_reps.size == 0 or c_reps.size == 0:
            row.update(delta=None, delta_rel=None, ci_low=None, ci_high=None, verdict="n/a")
        else:
            low, high = np.quantile(c_reps - b_reps, [alpha / 2, 1 - alpha / 2])
            delta = c_value - b_value
            verdict = judge_delta(
                b_value,
                float(low),
                float(high),
                higher_is_worse=m.higher_is_worse,
                tolerance=tolerance,
                min_band=ERROR_RATE_MIN_BAND if m.source == "error_rate" else 0.0,
            )
            row.update(
                delta=delta,
                delta_rel=_pct(delta, b_value),
                ci_low=float(low),
                ci_high=float(high),
                ci_low_rel=_pct(float(low), b_value),
                ci_high_rel=_pct(float(high), b_value),
                verdict=verdict,
            )
        rows.append(row)

    regressed = [r["metric"] for r in rows if r["verdict"] == "regressed"]
    notes = []
    cur_profile = cur_run.summary.get("meta", {}).get("profile")
    base_profile = base_run.summary.get("meta", {}).get("profile")
    if cur_profile != base_profile:
        notes.append(f"the runs come from different profiles ({cur_profile} vs baseline {base_profile})")
    if any(r["subsampled"] for r in rows):
        notes.append(
            f"metrics with more than {max_samples:,} values were subsampled: their intervals are wider"
        )
    return {
        "schema_version": COMPARE_SCHEMA_VERSION,
        "run": cur_run.run_id,
        "run_dir": str(cur_run.path),
        "baseline": base_run.run_id,
        "baseline_dir": str(base_run.path),
        "tolerance": tolerance,
        "confidence": confidence,
        "resamples": resamples,
        "max_samples": max_samples,
        "seed": seed,
        "metrics": rows,
        "regressed": regressed,
        "verdict": "regressed" if regressed else "ok",
        "notes": notes,
    }


def _fmt_value(value: float | None, unit: str) -> str:
    if value is None:
        return "—"
    if unit == "fraction":
        return f"{value:.2%}"
    return f"{value:,.1f}" if unit == "tokens/s" else f"{value:,.3f}"


def _fmt_delta(value: float | None, unit: str) -> str:
    if value is None:
        return "—"
    if unit == "fraction":
        return f"{value * 100:+.2f} pp"
    return f"{value:+,.1f}" if unit == "tokens/s" else f"{value:+,.3f}"


def table_rows(result: dict[str, Any]) -> list[list[str]]:
    """Rows of metric, baseline, current, delta, delta %, interval of the delta, verdict (text).

    Units are in the metric names: ``_ms`` in ms, ``error_rate`` in % (deltas in percentage
    points), ``tokens_per_s`` in tokens/s.
    """
    rows = []
    for r in result["metrics"]:
        unit = r["unit"]
        rel = "—" if r.get("delta_rel") is None else f"{r['delta_rel']:+.1%}"
        ci = (
            "—"
            if r.get("ci_low") is None
            else f"[{_fmt_delta(r['ci_low'], unit)}, {_fmt_delta(r['ci_high'], unit)}]"
        )
        rows.append(
            [
                r["metric"],
                _fmt_value(r["baseline"], unit),
                _fmt_value(r["current"], unit),
                _fmt_delta(r.get("delta"), unit),
                rel,
                ci,
                r["verdict"],
            ]
        )
    return rows


def render_compare_md(result: dict[str, Any]) -> str:
    """compare.md: the verdict and the per-metric table as Markdown."""
    head = "REGRESSED" if result["verdict"] == "regressed" else "No regression"
    lines = [
        f"# {head} — run `{result['run']}` vs baseline `{result['baseline']}`",
        "",
        f"{result['confidence']:.0%} bootstrap intervals of current − baseline ({result['resamples']:,} "
        f"resamples, seed {result['seed']}); a metric regresses when its whole interval is worse by more "
        f"than {result['tolerance']:.0%} of the baseline.",
        "",
        "| metric | baseline | current | Δ | Δ % | interval of Δ | verdict |",
        "| --- | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for row in table_rows(result):
        verdict = row[-1]
        row[-1] = f"**{verdict}**" if verdict == "regressed" else verdict
        lines.append("| " + " | ".join(row) + " |")
    if result["regressed"]:
        lines += ["", "Regressed: " + ", ".join(f"`{m}`" for m in result["regressed"]) + "."]
    lines += [f"- {n}" for n in result.get("notes") or []]
    return "\n".join([*lines, ""])


def write_compare(result: dict[str, Any], out_dir: Path) -> list[Path]:
    """Write compare.json and compare.md into ``out_dir``; returns their paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path, md_path = out_dir / COMPARE_JSON, out_dir / COMPARE_MD
    write_json(json_path, result)
    write_text(md_path, render_compare_md(result))
    return [json_path, md_path]
