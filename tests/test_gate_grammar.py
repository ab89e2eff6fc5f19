"""The threshold grammar: examples, errors with columns, and property tests (hypothesis)."""

from __future__ import annotations

import pytest
from hypothesis import example, given, settings, strategies as st

from harness.errors import ExitCode, InputError
from harness.gate.grammar import (
    CLASSES,
    CLOUDS,
    METRICS,
    OPS,
    UNITS,
    GateSyntaxError,
    Threshold,
    format_number,
    parse,
    render,
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            'p99(ttft{scenario="chat"}) < 800ms',
            Threshold("p99", "ttft", (("scenario", "chat"),), "<", 800.0, "ms"),
        ),
        ("p99.9(itl) <= 2s", Threshold("p99.9", "itl", (), "<=", 2.0, "s")),
        ("rate(errors) < 1%", Threshold("rate", "errors", (), "<", 1.0, "%")),
        ("avg(goodput) >= 90rps", Threshold("avg", "goodput", (), ">=", 90.0, "rps")),
        (
            "p95(latency) <= baseline * 1.10",
            Threshold("p95", "latency", (), "<=", None, None, baseline=True, factor=1.1),
        ),
        (
            ' count ( violations { kind = "cloud" , cloud = "aws" } ) == 0 ',
            Threshold("count", "violations", (("kind", "cloud"), ("cloud", "aws")), "==", 0.0),
        ),
        ("max(harness_lag) != 1e3us", Threshold("max", "harness_lag", (), "!=", 1000.0, "us")),
    ],
)
def test_examples_parse_to_their_ast(text: str, expected: Threshold) -> None:
    """Documented examples parse to the expected threshold, whitespace and all."""
    assert parse(text) == expected


@pytest.mark.parametrize(
    ("text", "canonical"),
    [
        ("violations == 0", "count(violations) == 0"),
        ("errors < 1%", "rate(errors) < 1%"),
        ("errors < 5", "count(errors) < 5"),
        ('dropped{kind="lag_budget"} <= 0.5%', 'rate(dropped{kind="lag_budget"}) <= 0.5%'),
        ("goodput > 90", "avg(goodput) > 90"),
        ("tokens_per_s >= 1000", "avg(tokens_per_s) >= 1000"),
        ("errors <= baseline", "count(errors) <= baseline"),
    ],
)
def test_bare_form_picks_the_function_from_the_unit(text: str, canonical: str) -> None:
    """Without a function, an event metric is a rate with % and a count without; throughput is avg."""
    assert render(parse(text)) == canonical


@pytest.mark.parametrize(
    ("text", "limit"),
    [
        ("p99(ttft) < 800", 800.0),
        ("p99(ttft) < 800ms", 800.0),
        ("p99(ttft) < 1.5s", 1500.0),
        ("p99(ttft) < 250us", 0.25),
        ("rate(errors) < 1%", 0.01),
        ("rate(errors) < 0.01", 0.01),
        ("count(errors) < 7", 7.0),
    ],
)
def test_limits_convert_to_base_units(text: str, limit: float) -> None:
    """Times convert to ms (a bare number is ms), percentages to fractions, counts stay counts."""
    assert parse(text).limit == pytest.approx(limit)


@pytest.mark.parametrize(
    ("text", "column", "words"),
    [
        ("p99(errors) < 1", 1, "p99() does not apply to errors"),
        ("rate(latency) < 1%", 1, "rate() does not apply to latency"),
        ("p99(ttft) < 800xs", 16, "unit 'xs'"),
        ("count(errors) < 3%", 18, "takes no unit"),
        ("p99(tfft) < 1", 5, "unknown metric 'tfft'"),
        ("p101(ttft) < 1", 1, "above 100"),
        ("p99.12345(ttft) < 1", 1, "more than 4 decimals"),
        ("latency < 5", 1, "needs a function"),
        ("p99(ttft{scenario=chat}) < 3", 19, "double-quoted"),
        ('p99(ttft{colour="red"}) < 3', 10, "unknown selector 'colour'"),
        ('p99(ttft{kind="cloud"}) < 3', 10, "selector 'kind' does not apply to ttft"),
        ('count(dropped{cloud="aws"}) == 0', 15, "selector 'cloud' does not apply to dropped"),
        ('rate(errors{kind="cloud"}) < 1%', 18, "kind='cloud' is not one of"),
        ('count(violations{cloud="azrue"}) == 0', 24, "cloud='azrue' is not one of"),
        ('p99(ttft{scenario="a",scenario="b"}) < 1', 23, "given twice"),
        ("p99(ttft) = 3", 11, "use =="),
        ("p99(ttft) < 3ms )", 17, "unexpected"),
        ("p99(ttft", 9, "expected ')'"),
        ("", 1, "expected a function"),
        ("p99(ttft) < baseline * ", 24, "a factor"),
        ("p99(ttft) < 1e999", 13, "too large"),
    ],
)
def test_errors_name_the_problem_and_column(text: str, column: int, words: str) -> None:
    """Each kind of mistake is a GateSyntaxError whose one-line message says what and where."""
    with pytest.raises(GateSyntaxError) as info:
        parse(text)
    err = info.value
    assert err.pos + 1 == column, err.one_line()
    assert words in err.problem
    assert f"at column {column}:" in err.one_line()
    assert "\n" not in err.one_line()


def test_syntax_errors_are_input_errors_with_exit_2() -> None:
    """A bad threshold is bad user input: exit code 2, with a hint, on one line even for multi-line text."""
    with pytest.raises(InputError) as info:
        parse("p99(ttft)\n< 1 xx")
    assert info.value.exit_code == ExitCode.INVALID_INPUT
    assert info.value.hint
    assert "\n" not in info.value.one_line()


def test_selector_values_escape_quotes_and_backslashes() -> None:
    """A selector value may hold quotes and backslashes, escaped in the text and in the rendering."""
    t = parse(r'p50(ttft{scenario="a\"b\\c"}) < 1')
    assert t.selector("scenario") == 'a"b\\c'
    assert parse(render(t)) == t


# ------------------------------------------------------------------------------ property tests

_WS = st.sampled_from(["", " ", "  ", "\t", "\n"])
_VALUE_TEXT = st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=8)


def _quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


@st.composite
def _number(draw: st.DrawFn) -> tuple[str, float]:
    x = draw(st.floats(min_value=0, max_value=1e12, allow_nan=False, allow_infinity=False))
    style = draw(st.sampled_from(["repr", "fixed", "int", "exp"]))
    text = {"repr": repr(x), "fixed": f"{x:.3f}", "int": str(int(x)), "exp": f"{x:e}"}[style]
    return text, float(text)


@st.composite
def valid_thresholds(draw: st.DrawFn) -> tuple[str, Threshold]:
    """A valid expression (random spacing, bare or full form) and the threshold it must parse to."""
    spec = METRICS[draw(st.sampled_from(sorted(METRICS)))]
    keys = draw(st.lists(st.sampled_from(spec.selectors), unique=True, max_size=3))
    selectors = []
    for key in keys:
        pool = {"cloud": CLOUDS, "class": CLASSES, "kind": spec.kinds}.get(key)
        value = draw(st.sampled_from(pool) if pool else _VALUE_TEXT)
        selectors.append((key, value))
    w = lambda: draw(_WS)  # noqa: E731
    sel = ("{" + ",".join(f"{w()}{k}{w()}={w()}{_quote(v)}{w()}" for k, v in selectors) + "}") if keys else ""
    op = draw(st.sampled_from(OPS))
    bare = spec.family != "distribution" and draw(st.booleans())
    function = None
    if not bare:
        choices = [f for f in spec.functions if f != "pNN"]
        if spec.family == "distribution":
            choices.append(f"p{draw(st.integers(0, 99))}.{draw(st.integers(0, 9999)):04d}")
            choices.append(f"p{draw(st.integers(0, 100))}")
        function = draw(st.sampled_from(choices))
    if draw(st.booleans()):
        factor_text, factor = draw(_number()) if draw(st.booleans()) else ("", 1.0)
        rhs = "baseline" + (f"{w()}*{w()}{factor_text}" if factor_text else "")
        value, unit, baseline = None, None, True
        if function is None:
            function = "count" if spec.family == "event" else "avg"
    else:
        number_text, value = draw(_number())
        factor, baseline = 1.0, False
        if function is None:
            unit = draw(st.sampled_from([None, "%"] if spec.family == "event" else [None]))
            function = ("rate" if unit == "%" else "count") if spec.family == "event" else "avg"
        else:
            unit = draw(st.sampled_from(list(UNITS[spec.dimension(function)])))
        rhs = number_text + w() + (unit or "")
    canonical_function = function
    if function.startswith("p"):
        canonical_function = "p" + f"{float(function[1:]):.6f}".rstrip("0").rstrip(".")
    head = f"{spec.name}{w()}{sel}" if bare else f"{function}{w()}({w()}{spec.name}{w()}{sel}{w()})"
    text = f"{w()}{head}{w()}{op}{w()}{rhs}{w()}"
    expected = Threshold(canonical_function, spec.name, tuple(selectors), op, value, unit, baseline, factor)
    return text, expected


@settings(max_examples=200, deadline=None)
@given(valid_thresholds())
def test_generated_valid_expressions_parse(case: tuple[str, Threshold]) -> None:
    """Every expression the grammar allows parses to exactly the threshold it spells."""
    text, expected = case
    assert parse(text) == expected


@settings(max_examples=200, deadline=None)
@given(valid_thresholds())
def test_render_parses_back_to_an_equal_ast(case: tuple[str, Threshold]) -> None:
    """render(parse(x)) is valid and parses to an AST equal to parse(x); rendering is a fixed point."""
    t = parse(case[0])
    again = parse(render(t))
    assert again == t
    assert render(again) == render(t)


def _only_syntax_errors(text: str) -> None:
    try:
        parse(text)
    except GateSyntaxError:
        pass


@settings(max_examples=500, deadline=None)
@given(st.text())
@example("p99(")
@example('p99(ttft{scenario="')
@example("p99(ttft) < baseline *")
@example("p" + "9" * 400 + "(ttft) < 1")
@example("p99(ttft) < " + "9" * 400)
def test_arbitrary_text_raises_only_gate_syntax_errors(text: str) -> None:
    """Any text either parses or raises GateSyntaxError, never another exception."""
    _only_syntax_errors(text)


@settings(max_examples=500, deadline=None)
@given(st.text(alphabet='p9.(){}=,"\\<>!*%msu abelinrtokcdfgv_01e+-', max_size=40))
def test_grammar_shaped_noise_raises_only_gate_syntax_errors(text: str) -> None:
    """Text made of the grammar's own characters reaches deep parser states and still fails cleanly."""
    _only_syntax_errors(text)


@settings(max_examples=200, deadline=None)
@given(valid_thresholds(), st.data())
def test_mutated_valid_expressions_raise_only_gate_syntax_errors(case: tuple[str, Threshold], data) -> None:  # type: ignore[no-untyped-def]
    """Deleting, inserting or replacing a character of a valid expression never crashes the parser."""
    text = case[0]
    i = data.draw(st.integers(0, len(text)))
    c = data.draw(st.sampled_from('(){}=,"\\<>!*%. x9'))
    mutated = data.draw(
        st.sampled_from([text[:i] + text[i + 1 :], text[:i] + c + text[i:], text[:i] + c + text[i + 1 :]])
    )
    _only_syntax_errors(mutated)


def test_format_number_round_trips() -> None:
    """Numbers render as the shortest text that parses back to the same float."""
    for x in (0.0, 1.0, 800.0, 0.1, 1.1, 1e-05, 1e16, 123456789.125, 5e-324):
        assert float(format_number(x)) == x
