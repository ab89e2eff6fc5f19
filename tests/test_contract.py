"""One contract suite for every wire format: recorded bytes in, identical normalized events out,
however the bytes are split across reads (STYLE 8)."""

from __future__ import annotations

import importlib
import json
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings, strategies as st

FIXTURES = Path(__file__).parent / "contract"
MANIFESTS = sorted(FIXTURES.glob("*.json"))


def load(
    manifest: Path,
) -> tuple[Callable[[Iterable[bytes]], list[tuple[Any, ...]]], bytes, list[tuple[Any, ...]]]:
    spec = json.loads(manifest.read_text())
    module, _, func = spec["parser"].partition(":")
    parser = getattr(importlib.import_module(module), func)
    body = (FIXTURES / spec["body"]).read_bytes()
    return parser, body, [tuple(e) for e in spec["expected"]]


def split(body: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(body) + 1) for c in cuts})
    return [body[a:b] for a, b in zip([0, *points], [*points, len(body)], strict=True)]


def test_every_dialect_has_fixtures() -> None:
    """The suite is not vacuous: at least one recorded stream per dialect module present."""
    parsers = {json.loads(m.read_text())["parser"].split(":")[0] for m in MANIFESTS}
    assert "harness.protocols.azure_openai" in parsers


@pytest.mark.parametrize("manifest", MANIFESTS, ids=[m.stem for m in MANIFESTS])
def test_recorded_stream_parses_to_expected_events(manifest: Path) -> None:
    """The whole recording, and the recording one byte per read, give exactly the expected events."""
    parser, body, expected = load(manifest)
    assert [tuple(e) for e in parser([body])] == expected
    assert [tuple(e) for e in parser([body[i : i + 1] for i in range(len(body))])] == expected


@pytest.mark.parametrize("manifest", MANIFESTS, ids=[m.stem for m in MANIFESTS])
def test_recorded_stream_any_split(manifest: Path) -> None:
    """Any split of the recording across reads gives the same events."""
    parser, body, expected = load(manifest)

    @settings(max_examples=60, deadline=None)
    @given(st.lists(st.integers(min_value=0, max_value=1 << 20), max_size=40))
    def check(cuts: list[int]) -> None:
        assert [tuple(e) for e in parser(split(body, cuts))] == expected

    check()
