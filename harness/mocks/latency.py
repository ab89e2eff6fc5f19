"""The mock's seeded latency model: how long until the first token, and between tokens.

    TTFT (s) = (ttft_base_ms + prefill_us_per_token × prompt_tokens / 1000) / 1000 × f
    ITL  (s) = itl_ms / 1000 × f

where each ``f`` is drawn independently, uniformly from [1 - jitter_frac, 1 + jitter_frac].
One model per endpoint, seeded from the fleet, so a fleet plus a seed replays the same delays
for the same sequence of requests.
"""

from __future__ import annotations

import random

from harness.profile.models import Latency


class LatencyModel:
    """Draws TTFT, inter-token delays (seconds) and reply lengths (tokens) for one endpoint."""

    __slots__ = ("_base_ms", "_fixed_out", "_itl_s", "_jitter", "_lo", "_prefill_ms", "_rng")

    def __init__(self, latency: Latency, seed: int) -> None:
        self._rng = random.Random(seed)
        self._base_ms = latency.ttft_base_ms
        self._prefill_ms = latency.prefill_us_per_token / 1000.0
        self._itl_s = latency.itl_ms / 1000.0
        self._jitter = latency.jitter_frac
        self._lo = 1.0 - latency.jitter_frac
        self._fixed_out = latency.output_tokens

    def _factor(self) -> float:
        if self._jitter == 0.0:
            return 1.0
        return self._lo + 2.0 * self._jitter * self._rng.random()

    def ttft_s(self, prompt_tokens: int) -> float:
        """Seconds from request to first token, prefill included."""
        return (self._base_ms + self._prefill_ms * prompt_tokens) / 1000.0 * self._factor()

    def itl_s(self) -> float:
        """Seconds between two consecutive output tokens."""
        return self._itl_s * self._factor()

    def fixed_itl_s(self) -> float | None:
        """The inter-token time in seconds when it never varies (no jitter), else None."""
        return self._itl_s if self._jitter == 0.0 else None

    def decode_s(self, n_tokens: int) -> float:
        """Seconds from the first to the last of ``n_tokens`` tokens: the sum of n - 1 ITLs."""
        if n_tokens <= 1:
            return 0.0
        if self._jitter == 0.0:
            return self._itl_s * (n_tokens - 1)
        itl_s = self.itl_s
        return sum([itl_s() for _ in range(n_tokens - 1)])

    def output_tokens(self, max_tokens: int | None) -> int:
        """Reply length: the configured length capped by ``max_tokens``, else ``max_tokens``.

        With neither set, a reply is 16 tokens (a short answer, like a real model's).
        """
        fixed = self._fixed_out
        if fixed is None:
            return max(1, max_tokens) if max_tokens is not None else DEFAULT_OUTPUT_TOKENS
        if max_tokens is None:
            return fixed
        return max(1, min(fixed, max_tokens))


DEFAULT_OUTPUT_TOKENS = 16
