"""The one token-count approximation shared by the workload generator and the mocks.

Real tokenizers differ per model; a load test needs lengths that are *consistent* between
what the harness asks for and what the mock counts, not exact BPE counts. The rule:

    tokens(text) = number of whitespace-separated words

and generated text uses short lower-case words that real BPE tokenizers (cl100k, o200k) also
encode as one token each, so the approximation is close for generated prompts. When a server
reports ``usage``, the harness prefers it over this approximation.
"""

from __future__ import annotations

import random
from functools import lru_cache
from typing import Final

# Common English words that are single tokens in cl100k_base and o200k_base.
WORDS: Final = tuple(
    dict.fromkeys(  # ordered, without repeats
        "the of and to in is for on that with as was it by at be this are from or an have not "
        "they which one you were all we can her has there been if more when will would who so "
        "time use about out up what some other into than then them these its also two new more "
        "like way only first could over such make made most after many where well just any see "
        "work used much through back years how long even under take last here good same part "
        "number little people state world place still three high set since life every need most".split()
    )
)


def approx_tokens(text: str) -> int:
    """The token count of ``text`` under the shared approximation (≥ 1 for non-empty text)."""
    return len(text.split())


def prompt_text(n_tokens: int, seed: int) -> str:
    """Deterministic text of exactly ``n_tokens`` approximate tokens for a seed."""
    rng = random.Random(seed)
    return " ".join(rng.choices(WORDS, k=n_tokens))


def output_token(i: int) -> str:
    """The i-th token a mock streams: a leading space and a word, as real BPE deltas look."""
    return " " + WORDS[i % len(WORDS)]


@lru_cache(maxsize=1024)
def output_text(n_tokens: int) -> str:
    """Tokens 0..n-1 concatenated: the whole reply a mock sends (memoized: the same for every request)."""
    return "".join([output_token(i) for i in range(n_tokens)])
