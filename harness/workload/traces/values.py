"""Exact, fast parsers for the values found in trace rows; each raises ``BadValue`` with a message.

Times become integer nanoseconds without going through binary floats where the text allows it
(``19440110.5`` s is exact), and ISO timestamps are parsed with a regular expression and a
per-minute cache instead of a ``datetime`` per row: Azure traces hold millions of rows whose
timestamps share their minute, and carry 7 fractional digits that ``datetime`` cannot hold.
"""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime

NS_PER_S = 1_000_000_000
UNIT_NS: dict[str, int] = {"s": NS_PER_S, "ms": 1_000_000, "us": 1_000, "ns": 1}
MAX_ABS_NS = 2**63 - 1  # int64 nanoseconds: ±292 years around the trace's clock origin
MAX_TOKENS = 1_000_000_000

_DECIMAL = re.compile(r"\s*([+-]?)(\d*)(?:\.(\d*))?\s*\Z", re.ASCII)
_ISO = re.compile(
    r"\s*(\d{4}-\d{2}-\d{2})[T ](\d{2}):(\d{2})(?::(\d{2})(?:[.,](\d+))?)?"
    r"\s*(Z|z|[+-]\d{2}(?::?\d{2})?)?\s*\Z",
    re.ASCII,
)


class BadValue(ValueError):
    """A field that does not hold what its column promises; the message names the value."""


def _checked(ns: int, text: object) -> int:
    if not -MAX_ABS_NS <= ns <= MAX_ABS_NS:
        raise BadValue(f"time {text!r} is out of range")
    return ns


def decimal_ns(text: str, unit_ns: int) -> int:
    """A decimal number of ``unit_ns``-nanosecond units (``"12.5"`` ms) as exact integer ns."""
    m = _DECIMAL.match(text)
    if m is None or not (m[2] or m[3]):
        try:
            value = float(text)  # exponent notation, e.g. 1.7e9
        except ValueError:
            raise BadValue(f"time {text!r} is not a number") from None
        return float_ns(value, unit_ns, text)
    if len(m[2]) > 30:
        raise BadValue(f"time {text[:40]!r} is out of range")
    ns = int(m[2] or 0) * unit_ns
    frac = m[3]
    if frac and unit_ns > 1:
        digits = len(str(unit_ns)) - 1  # unit_ns is a power of ten
        ns += int(frac[:digits].ljust(digits, "0"))
    return _checked(-ns if m[1] == "-" else ns, text)


def float_ns(value: float, unit_ns: int, text: object) -> int:
    if not math.isfinite(value) or abs(value) * unit_ns > MAX_ABS_NS:
        raise BadValue(f"time {text!r} is out of range")
    return round(value * unit_ns)


def json_time_ns(value: object, unit_ns: int) -> int:
    """A JSON number or numeric string of ``unit_ns`` units as integer ns."""
    if isinstance(value, bool):
        raise BadValue(f"time {value!r} is not a number")
    if isinstance(value, int):
        return _checked(value * unit_ns, value)
    if isinstance(value, float):
        return float_ns(value, unit_ns, value)
    if isinstance(value, str):
        return decimal_ns(value, unit_ns)
    raise BadValue(f"time {value!r} is not a number")


class IsoClock:
    """Parses ISO 8601 timestamps (``2023-11-16 18:17:03.9799600``, ``...+00:00``) to ns since the
    Unix epoch; a timestamp without an offset is taken as UTC. Up to 9 fractional digits are kept."""

    __slots__ = ("_minute_key", "_minute_s", "_prefix")

    def __init__(self) -> None:
        self._minute_key = ""
        self._minute_s = 0
        self._prefix = "-"  # "YYYY-MM-DD HH:MM:" of the last timestamp, as written

    def ns(self, text: str) -> int:
        if text[:17] == self._prefix:
            fast = self._same_minute(text[17:])
            if fast is not None:
                return fast
        m = _ISO.match(text)
        if m is None:
            raise BadValue(f"timestamp {text[:60]!r} is not ISO 8601 (YYYY-MM-DD HH:MM:SS[.fffffff][+HH:MM])")
        key = f"{m[1]}T{m[2]}:{m[3]}"
        if key != self._minute_key:
            try:
                minute = datetime.fromisoformat(key).replace(tzinfo=UTC)
            except ValueError:
                raise BadValue(f"timestamp {text[:60]!r} is not a valid date and time") from None
            self._minute_s = int(minute.timestamp())
            self._minute_key = key
        self._prefix = text[:17] if text[16:17] == ":" and m[4] else "-"
        seconds = int(m[4] or 0)
        if seconds > 59:
            raise BadValue(f"timestamp {text[:60]!r} has {seconds} seconds")
        ns = (self._minute_s + seconds) * NS_PER_S
        if m[5]:
            ns += int(m[5][:9].ljust(9, "0"))
        zone = m[6]
        if zone and zone not in ("Z", "z"):
            digits = zone[1:].replace(":", "")
            hours, minutes = int(digits[:2]), int(digits[2:] or 0)
            if hours > 23 or minutes > 59:
                raise BadValue(f"timestamp {text[:60]!r} has an invalid UTC offset")
            offset_ns = (hours * 3600 + minutes * 60) * NS_PER_S
            ns -= offset_ns if zone[0] == "+" else -offset_ns
        return ns

    def _same_minute(self, rest: str) -> int | None:
        """``SS.fffffff`` with no zone or ``+00:00``/``Z``, in the cached minute: the Azure layouts,
        read without the regular expression. ``None``: not that shape, take the slow path."""
        if rest.endswith("+00:00"):
            rest = rest[:-6]
        elif rest.endswith("Z"):
            rest = rest[:-1]
        frac = rest[3:]
        if len(rest) < 4 or rest[2] != "." or not (rest[:2].isdigit() and frac.isdigit() and rest.isascii()):
            return None
        seconds = int(rest[:2])
        if seconds > 59 or len(frac) > 9:
            return None
        return (self._minute_s + seconds) * NS_PER_S + int(frac.ljust(9, "0"))


def tokens(value: object, what: str) -> int:
    """A token count: a non-negative integer (a JSON integer, an integral float, or digits)."""
    if type(value) is str:
        if value.isascii() and value.isdigit() and len(value) < 11:  # the common case, kept cheap
            count = int(value)
            if count <= MAX_TOKENS:
                return count
    elif type(value) is int and 0 <= value <= MAX_TOKENS:
        return value
    return _tokens_slow(value, what)


def _tokens_slow(value: object, what: str) -> int:
    if isinstance(value, str):
        text = value.strip()
        if text.isascii() and text.isdigit() and len(text) < 12:
            count = int(text)
        else:
            try:
                number = float(text)
            except ValueError:
                raise BadValue(f"{what} {value[:40]!r} is not a whole number") from None
            return _tokens_slow(number, what)
    elif isinstance(value, bool) or not isinstance(value, int | float):
        raise BadValue(f"{what} {value!r} is not a whole number")
    elif isinstance(value, float):
        if not value.is_integer():
            raise BadValue(f"{what} {value!r} is not a whole number")
        count = int(value)
    else:
        count = value
    if count < 0 or count > MAX_TOKENS:
        raise BadValue(f"{what} {count} is out of range (0 to {MAX_TOKENS:,})")
    return count


def seconds(value: object, unit_ns: int, what: str) -> float:
    """A non-negative duration (think time, elapsed time) in seconds."""
    try:
        ns = json_time_ns(value, unit_ns)
    except BadValue:
        raise BadValue(f"{what} {str(value)[:40]!r} is not a number") from None
    if ns < 0:
        raise BadValue(f"{what} {value!r} is negative")
    return ns / NS_PER_S
