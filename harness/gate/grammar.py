"""The threshold language: parse an SLO expression into a ``Threshold``, render it back.

Grammar (k6-like; whitespace is allowed between any two tokens)::

    threshold  := head OP rhs
    head       := FUNC "(" METRIC [selectors] ")"          p99(ttft{scenario="chat"})
                | METRIC [selectors]                         violations, errors{kind="http_5xx"}
    FUNC       := "p" NUMBER (0..100, at most 4 decimals) | "avg" | "min" | "max" | "count" | "rate"
    selectors  := "{" KEY "=" STRING ("," KEY "=" STRING)* "}"   STRING is double-quoted; \\" and \\\\ escape
    OP         := "<" | "<=" | ">" | ">=" | "==" | "!="
    rhs        := NUMBER [UNIT] | "baseline" ["*" NUMBER]
    UNIT       := "ms" | "s" | "us" | "%" | "rps"
    NUMBER     := digits ["." digits] [("e"|"E") ["+"|"-"] digits]   (non-negative, finite)

Metric families decide which functions and units apply (``METRICS`` below is the glossary):

    distribution  pNN, avg, min, max (time: ms, s, us; a bare number is ms) and count (no unit).
                  Percentiles come from the same HDR histogram as summary.json, so a gate and
                  the summary never disagree.
    event         count (no unit) and rate (a fraction: 0.01 or 1%).
    throughput    avg over the load phase (per second: rps or a bare number); goodput also count.

The bare form (no function) picks the function from the right-hand side: an event metric with
``%`` is its rate, without a unit its count (``violations == 0``, ``errors < 1%``); a throughput
metric is its avg. A distribution metric always needs a function.

Everything that can be checked without a run is checked here and reported as a
``GateSyntaxError`` with the column: unknown metrics, functions, selector keys, units, a
function that does not apply to its metric (``p99(errors)``), a ``kind`` the metric does not
have. ``render(parse(x))`` is the canonical spelling and parses back to an equal ``Threshold``.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Final, Literal

from harness.errors import InputError
from harness.results.schema import ERROR_KINDS

Family = Literal["distribution", "event", "throughput"]
Dimension = Literal["time", "count", "fraction", "per_s", "tokens_per_s"]

OPS: Final = ("<=", ">=", "==", "!=", "<", ">")  # two-character operators first when scanning
FUNCTIONS: Final = ("avg", "min", "max", "count", "rate")  # plus pNN
UNITS: Final[dict[Dimension, dict[str | None, float]]] = {
    "time": {None: 1.0, "ms": 1.0, "s": 1000.0, "us": 0.001},  # to ms
    "count": {None: 1.0},
    "fraction": {None: 1.0, "%": 0.01},  # to a fraction
    "per_s": {None: 1.0, "rps": 1.0},
    "tokens_per_s": {None: 1.0},
}
BASE_UNIT: Final[dict[Dimension, str]] = {
    "time": "ms",
    "count": "",
    "fraction": "%",  # displayed as %; stored as a fraction
    "per_s": "rps",
    "tokens_per_s": "tokens/s",
}

CLOUDS: Final = ("azure", "openai", "aws", "gcp", "oracle", "other")
CLASSES: Final = ("stateless", "stateful")
DROP_KINDS: Final = ("in_flight_cap", "lag_budget")
ERROR_OUTCOME_KINDS: Final = tuple(k for k in ERROR_KINDS if k not in (*DROP_KINDS, "interrupted"))
VIOLATION_KINDS: Final = ("cloud", "attestation_mismatch", "unattributed", "served_twice")

_COMMON: Final = ("scenario", "endpoint", "cloud", "region", "class")
SELECTOR_KEYS: Final = (*_COMMON, "kind", "rule")
MAX_PERCENTILE_DECIMALS: Final = 4


@dataclass(frozen=True, slots=True)
class MetricSpec:
    """What a metric means, which functions and selectors apply, and which ``kind`` values exist."""

    name: str
    family: Family
    description: str
    selectors: tuple[str, ...] = _COMMON
    kinds: tuple[str, ...] = ()

    @property
    def functions(self) -> tuple[str, ...]:
        if self.family == "distribution":
            return ("pNN", "avg", "min", "max", "count")
        if self.family == "event":
            return ("count", "rate")
        return ("avg", "count") if self.name == "goodput" else ("avg",)

    def allows(self, function: str) -> bool:
        if function.startswith("p"):
            return self.family == "distribution"
        return function in self.functions

    def dimension(self, function: str) -> Dimension:
        if function == "count":
            return "count"
        if self.family == "distribution":
            return "time"
        if self.family == "event":
            return "fraction"
        return "tokens_per_s" if self.name == "tokens_per_s" else "per_s"


def _dist(name: str, description: str) -> MetricSpec:
    return MetricSpec(name, "distribution", description)


METRICS: Final[dict[str, MetricSpec]] = {
    m.name: m
    for m in (
        _dist("latency", "end-to-end latency of ok requests from their intended send time (ms)"),
        _dist("latency_sent", "end-to-end latency of ok requests from the moment they were sent (ms)"),
        _dist("ttft", "time to first token from the intended send time, any outcome with a token (ms)"),
        _dist("ttft_sent", "time to first token from the moment the request was sent (ms)"),
        _dist("itl", "inter-token latency: every gap between consecutive content chunks (ms)"),
        _dist("tpot", "time per output token after the first, ok requests with > 1 token (ms)"),
        _dist("harness_lag", "schedule lag: how late the harness sent each request, sent - intended (ms)"),
        MetricSpec(
            "tokens_per_s",
            "throughput",
            "output tokens of ok requests per second of the load phase (summary tokens.out_per_s)",
        ),
        MetricSpec(
            "goodput",
            "throughput",
            "ok requests; avg = ok requests per second of the load phase (summary rate.completed_rps)",
        ),
        MetricSpec(
            "errors",
            "event",
            "requests that ended in error or timeout; rate = errors / planned requests",
            kinds=ERROR_OUTCOME_KINDS,
            selectors=(*_COMMON, "kind"),
        ),
        MetricSpec("http_429", "event", "requests rate-limited (HTTP 429); rate = 429s / planned requests"),
        MetricSpec(
            "dropped",
            "event",
            "arrivals the harness could not send in time (open-loop overload); rate = dropped / planned",
            kinds=DROP_KINDS,
            selectors=("scenario", "endpoint", "class", "kind"),
        ),
        MetricSpec(
            "violations",
            "event",
            "routing-policy violations; rate = violations / served (judged) requests",
            kinds=VIOLATION_KINDS,
            selectors=(*_COMMON, "kind", "rule"),
        ),
    )
}


class GateSyntaxError(InputError):
    """A threshold expression that does not parse or does not make sense; names the column."""

    def __init__(self, text: str, pos: int, problem: str) -> None:
        self.text = text
        self.pos = pos
        self.problem = problem
        super().__init__(
            f"bad threshold {text!r} at column {pos + 1}: {problem}",
            'see docs/gates.md; e.g. p99(ttft{scenario="chat"}) < 800ms or rate(errors) < 1%',
        )


@dataclass(frozen=True, slots=True)
class Threshold:
    """One parsed threshold. ``value`` and ``unit`` are as written; ``limit`` converts to base units.

    ``baseline`` thresholds compare against the same function on a baseline run, times ``factor``.
    ``text`` (the source) takes no part in equality.
    """

    function: str  # "p99", "p99.9", "avg", "min", "max", "count", "rate"
    metric: str
    selectors: tuple[tuple[str, str], ...]
    op: str
    value: float | None = None  # None for baseline thresholds
    unit: str | None = None
    baseline: bool = False
    factor: float = 1.0
    text: str = field(default="", compare=False)

    @property
    def spec(self) -> MetricSpec:
        return METRICS[self.metric]

    @property
    def percentile(self) -> float | None:
        return float(self.function[1:]) if self.function.startswith("p") else None

    @property
    def dimension(self) -> Dimension:
        return self.spec.dimension(self.function)

    @property
    def limit(self) -> float | None:
        """The right-hand side in base units (ms, fraction, count, per second); None for baselines."""
        if self.value is None:
            return None
        return self.value * UNITS[self.dimension][self.unit]

    def selector(self, key: str) -> str | None:
        return next((v for k, v in self.selectors if k == key), None)

    def __str__(self) -> str:
        return self.text or render(self)


def compare(observed: float, op: str, limit: float) -> bool:
    """``observed OP limit``."""
    if op == "<":
        return observed < limit
    if op == "<=":
        return observed <= limit
    if op == ">":
        return observed > limit
    if op == ">=":
        return observed >= limit
    if op == "==":
        return observed == limit
    return observed != limit


# ------------------------------------------------------------------------------------- parsing

_WS = re.compile(r"\s*")
_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(?:\.[0-9]+)?")
_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_NUMBER = re.compile(r"(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
_UNIT = re.compile(r"[A-Za-z%]+")
_PERCENTILE = re.compile(r"p([0-9]+)(?:\.([0-9]+))?")


def _choices(items: tuple[str, ...] | list[str]) -> str:
    return ", ".join(items)


class _Scanner:
    __slots__ = ("pos", "text")

    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0

    def fail(self, problem: str, pos: int | None = None) -> GateSyntaxError:
        return GateSyntaxError(self.text, self.pos if pos is None else pos, problem)

    def ws(self) -> int:
        """Skip whitespace; the position after it."""
        m = _WS.match(self.text, self.pos)
        self.pos = m.end() if m else self.pos
        return self.pos

    def peek(self, s: str) -> bool:
        self.ws()
        return self.text.startswith(s, self.pos)

    def take(self, s: str) -> bool:
        if self.peek(s):
            self.pos += len(s)
            return True
        return False

    def expect(self, s: str, what: str) -> None:
        if not self.take(s):
            raise self.fail(f"expected {what}, found {self.found()}")

    def match(self, pattern: re.Pattern[str]) -> str | None:
        self.ws()
        m = pattern.match(self.text, self.pos)
        if m is None or not m.group():
            return None
        self.pos = m.end()
        return m.group()

    def found(self) -> str:
        rest = self.text[self.pos :]
        return "the end" if not rest else repr(rest[:12])

    def number(self, what: str) -> float:
        start = self.pos
        raw = self.match(_NUMBER)
        if raw is None:
            self.ws()
            raise self.fail(f"expected {what}, found {self.found()}")
        value = float(raw)
        if not math.isfinite(value):
            raise self.fail(f"number {raw} is too large", start)
        return value

    def string(self) -> str:
        self.ws()
        if not self.text.startswith('"', self.pos):
            raise self.fail(f'expected a double-quoted value such as "chat", found {self.found()}')
        start = self.pos
        self.pos += 1
        out: list[str] = []
        while self.pos < len(self.text):
            c = self.text[self.pos]
            if c == "\\":
                if self.pos + 1 >= len(self.text) or self.text[self.pos + 1] not in '"\\':
                    raise self.fail('only \\" and \\\\ may follow a backslash')
                out.append(self.text[self.pos + 1])
                self.pos += 2
                continue
            self.pos += 1
            if c == '"':
                return "".join(out)
            out.append(c)
        raise self.fail("unterminated string", start)


def _function(sc: _Scanner, name: str, pos: int) -> str:
    m = _PERCENTILE.fullmatch(name)
    if m is not None:
        decimals = m.group(2) or ""
        if len(decimals) > MAX_PERCENTILE_DECIMALS:
            raise sc.fail(f"percentile {name} has more than {MAX_PERCENTILE_DECIMALS} decimals", pos)
        p = float(name[1:])
        if p > 100:
            raise sc.fail(f"percentile {name} is above 100", pos)
        text = f"{p:.6f}".rstrip("0").rstrip(".")
        return f"p{text}"
    if name in FUNCTIONS:
        return name
    raise sc.fail(f"unknown function {name!r} (use pNN such as p99 or p99.9, {_choices(FUNCTIONS)})", pos)


def _metric(sc: _Scanner) -> str:
    pos = sc.ws()
    name = sc.match(_KEY)
    if name is None:
        raise sc.fail(f"expected a metric name ({_choices(list(METRICS))}), found {sc.found()}")
    if name not in METRICS:
        raise sc.fail(f"unknown metric {name!r} (known: {_choices(list(METRICS))})", pos)
    return name


def _selectors(sc: _Scanner, spec: MetricSpec) -> tuple[tuple[str, str], ...]:
    if not sc.take("{"):
        return ()
    out: list[tuple[str, str]] = []
    while True:
        pos = sc.ws()
        key = sc.match(_KEY)
        if key is None:
            raise sc.fail(f"expected a selector key ({_choices(spec.selectors)}), found {sc.found()}")
        if key not in SELECTOR_KEYS:
            raise sc.fail(f"unknown selector {key!r} (known: {_choices(SELECTOR_KEYS)})", pos)
        if key not in spec.selectors:
            raise sc.fail(
                f"selector {key!r} does not apply to {spec.name} (it takes {_choices(spec.selectors)})", pos
            )
        if any(k == key for k, _ in out):
            raise sc.fail(f"selector {key!r} given twice", pos)
        sc.expect("=", f"'=' after {key}")
        vpos = sc.ws()
        value = sc.string()
        allowed = {"cloud": CLOUDS, "class": CLASSES, "kind": spec.kinds}.get(key)
        if value == "":
            raise sc.fail(f"selector {key!r} has an empty value", vpos)
        if allowed is not None and value not in allowed:
            raise sc.fail(f"{key}={value!r} is not one of {_choices(allowed)}", vpos)
        out.append((key, value))
        if sc.take("}"):
            return tuple(out)
        sc.expect(",", "',' or '}'")


def _op(sc: _Scanner) -> str:
    sc.ws()
    for op in OPS:
        if sc.take(op):
            return op
    if sc.peek("="):
        raise sc.fail("use == to test equality")
    raise sc.fail(f"expected a comparison ({_choices(OPS)}), found {sc.found()}")


def parse(text: str) -> Threshold:
    """Parse one threshold expression; raises ``GateSyntaxError`` (and nothing else) when invalid."""
    sc = _Scanner(text)
    head_pos = sc.ws()
    head = sc.match(_IDENT)
    if head is None:
        raise sc.fail(f"expected a function such as p99( or a metric, found {sc.found()}")
    function: str | None
    if sc.peek("("):
        function = _function(sc, head, head_pos)
        sc.take("(")
        metric = _metric(sc)
        spec = METRICS[metric]
        if not spec.allows(function):
            uses = " or ".join(f"{f}({metric})" for f in spec.functions)
            article = "an" if spec.family == "event" else "a"
            problem = f"{function}() does not apply to {metric}, {article} {spec.family} metric: use {uses}"
            raise sc.fail(problem, head_pos)
        selectors = _selectors(sc, spec)
        sc.expect(")", "')'")
    else:
        if head not in METRICS:
            if _PERCENTILE.fullmatch(head) or head in FUNCTIONS:
                raise sc.fail(f"expected '(' after {head}, found {sc.found()}")
            raise sc.fail(f"unknown metric {head!r} (known: {_choices(list(METRICS))})", head_pos)
        function, metric = None, head
        spec = METRICS[metric]
        if spec.family == "distribution":
            raise sc.fail(f"{metric} needs a function, e.g. p99({metric}) or avg({metric})", head_pos)
        selectors = _selectors(sc, spec)
    op = _op(sc)
    if sc.take("baseline"):
        factor = 1.0
        if sc.take("*"):
            factor = sc.number("a factor after 'baseline *'")
        if function is None:
            function = "count" if spec.family == "event" else spec.functions[0]
        value, unit, baseline = None, None, True
    else:
        value = sc.number("a number or 'baseline'")
        unit_pos = sc.ws()
        unit = sc.match(_UNIT)
        if function is None:
            function = ("rate" if unit == "%" else "count") if spec.family == "event" else "avg"
        dim = spec.dimension(function)
        if unit not in UNITS[dim]:
            units = [u for u in UNITS[dim] if u is not None]
            expected = f"use {_choices(units)} or none" if units else "it takes no unit"
            raise sc.fail(f"unit {unit!r} does not apply to {function}({metric}): {expected}", unit_pos)
        factor, baseline = 1.0, False
    sc.ws()
    if sc.pos != len(text):
        raise sc.fail(f"unexpected {sc.found()} after the threshold")
    return Threshold(function, metric, selectors, op, value, unit, baseline, factor, text)


# ----------------------------------------------------------------------------------- rendering


def format_number(x: float) -> str:
    """The shortest text that parses back to exactly ``x`` (integers without a decimal point)."""
    if x.is_integer() and abs(x) < 1e16:
        return str(int(x))
    return repr(x)


def _quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def render(t: Threshold) -> str:
    """The canonical spelling of a threshold: full function form, ``", "``-free selectors."""
    sel = "{" + ",".join(f"{k}={_quote(v)}" for k, v in t.selectors) + "}" if t.selectors else ""
    if t.baseline:
        rhs = "baseline" if t.factor == 1.0 else f"baseline * {format_number(t.factor)}"
    else:
        assert t.value is not None
        rhs = format_number(t.value) + (t.unit or "")
    return f"{t.function}({t.metric}{sel}) {t.op} {rhs}"
