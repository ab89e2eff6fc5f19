"""Property-based fuzzing of the input files: whatever a user writes, the answer is a one-line error.

Random bytes, random TOML values put into valid documents, deleted keys, wrong types, huge and
non-finite numbers and unicode in profiles, fleets and policies must make ``prepare`` (what
`harness run` and `harness profiles validate` call first) raise a HarnessError whose one-line
message names the file, never any other exception; the CLI turns that into exit 2.
"""

from __future__ import annotations

import copy
import datetime as dt
import json
import math
import tomllib
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings, strategies as st

from harness.errors import ExitCode, HarnessError
from harness.profile import load_fleet, load_policy
from harness.runner import prepare
from tests.conftest import PROFILES, run_cli

FUZZ = settings(
    max_examples=80,
    deadline=None,  # a loaded machine must not flake these; the example count bounds the time
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    derandomize=True,  # the same examples on every run: a failure reproduces
)

# --------------------------------------------------------------------------- a small TOML writer


def toml_value(value: Any) -> str:
    """Any TOML value as inline TOML (strings via JSON escapes, which TOML basic strings share)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{toml_value(str(k))} = {toml_value(v)}" for k, v in value.items()) + "}"
    raise TypeError(type(value))


def toml_document(data: dict[str, Any]) -> str:
    return "".join(f"{toml_value(str(k))} = {toml_value(v)}\n" for k, v in data.items())


# --------------------------------------------------------------------------- strategies

TEXT = st.text(alphabet=st.characters(exclude_categories=("Cs",)), max_size=40)
SCALARS = st.one_of(
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.sampled_from([0, -1, 2**31, 2**63 - 1, -(2**63)]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([1e308, -1e308, 5e-324, 0.0, -0.0]),
    TEXT,
    st.sampled_from(["", "\n", "\x00", "é🚀", "../../etc/passwd", "a" * 500, "http://[::1", "${HOME}"]),
    st.datetimes(),
    st.dates(),
)
VALUES = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(TEXT, inner, max_size=3),
    max_leaves=6,
)


def key_paths(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every key path (dict keys and list indices) in a parsed document."""
    paths: list[tuple[Any, ...]] = []
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else []
    for key, child in items:
        paths.append((*prefix, key))
        paths.extend(key_paths(child, (*prefix, key)))
    return paths


def mutate(doc: dict[str, Any], data: st.DataObject) -> dict[str, Any]:
    """One to three mutations: delete a key, replace a value, or add an unknown key (any value)."""
    doc = copy.deepcopy(doc)
    for _ in range(data.draw(st.integers(1, 3))):
        paths = key_paths(doc)
        path = data.draw(st.sampled_from(paths))
        parent: Any = doc
        for part in path[:-1]:
            parent = parent[part]
        last = path[-1]
        action = data.draw(st.sampled_from(["delete", "replace", "replace", "add"]))
        if action == "delete":
            del parent[last]
        elif action == "replace":
            parent[last] = data.draw(VALUES)
        elif isinstance(parent, dict):
            parent[data.draw(TEXT)] = data.draw(VALUES)
        if not key_paths(doc):
            break
    return doc


# --------------------------------------------------------------------------- the documents


def base_documents(tmp: Path) -> dict[str, dict[str, Any]]:
    """Valid profile, fleet and policy documents, the profile pointing at the other two in ``tmp``."""
    fleet = tomllib.loads((PROFILES / "fleets/multicloud.toml").read_text())
    policy = tomllib.loads((PROFILES / "policies/azure-stateless-exclusive.toml").read_text())
    profile = tomllib.loads((PROFILES / "smoke.toml").read_text())
    profile["target"]["fleet"] = str(tmp / "fleet.toml")
    profile["target"]["policy"] = str(tmp / "policy.toml")
    profile["thresholds"] = ['p99(ttft{scenario="chat"}) < 800ms', "rate(errors) < 1%"]
    # the profile's routes must name this fleet's endpoints
    endpoint = fleet["endpoints"][0]
    profile["scenarios"][0]["routes"] = [
        {"endpoint": endpoint["name"], "deployment": endpoint["deployments"][0]}
    ]
    return {"profile": profile, "fleet": fleet, "policy": policy}


def write_all(tmp: Path, docs: dict[str, dict[str, Any]]) -> Path:
    for kind, doc in docs.items():
        (tmp / f"{kind}.toml").write_text(toml_document(doc), encoding="utf-8")
    return tmp / "profile.toml"


def assert_one_line_error(exc: HarnessError, file: Path) -> None:
    line = exc.one_line()
    assert "\n" not in line and "\r" not in line, line
    assert str(file) in line, line
    assert exc.exit_code == ExitCode.INVALID_INPUT


@pytest.fixture(scope="module")
def docs_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fuzz")


def test_the_base_documents_are_valid(docs_dir: Path) -> None:
    """The unmutated documents load, so every failure below comes from a mutation."""
    prepare(write_all(docs_dir, base_documents(docs_dir)))


@FUZZ
@given(data=st.data(), which=st.sampled_from(["profile", "fleet", "policy"]))
def test_mutated_documents_fail_with_one_line_naming_the_file(
    docs_dir: Path, data: st.DataObject, which: str
) -> None:
    """A valid profile, fleet or policy with keys deleted, values replaced by anything TOML can hold, or
    unknown keys added either loads or raises a one-line HarnessError naming the profile file."""
    docs = base_documents(docs_dir)
    docs[which] = mutate(docs[which], data)
    profile = write_all(docs_dir, docs)
    try:
        prepare(profile)
    except HarnessError as exc:
        assert_one_line_error(exc, profile)
        if which != "profile":  # the sub-file is named too
            assert f"{which}.toml" in exc.one_line()


@FUZZ
@given(blob=st.binary(max_size=300), which=st.sampled_from(["profile", "fleet", "policy"]))
def test_random_bytes_fail_with_one_line_naming_the_file(docs_dir: Path, blob: bytes, which: str) -> None:
    """Random bytes as a profile, fleet or policy file are a one-line HarnessError naming the file."""
    docs = base_documents(docs_dir)
    profile = write_all(docs_dir, docs)
    path = docs_dir / f"{which}.toml"
    path.write_bytes(blob)
    with pytest.raises(HarnessError) as info:
        if which == "fleet":
            load_fleet(path)
        elif which == "policy":
            load_policy(path)
        else:
            prepare(profile)
    assert_one_line_error(info.value, path)


@FUZZ
@given(value=VALUES, key=st.sampled_from(["fleet", "policy", "allow_remote", "endpoints"]))
@example(value="\n", key="fleet")  # found by a 600-example run: a file name with a newline in it
@example(value="a\x00b", key="policy")
def test_odd_target_values_fail_with_one_line(docs_dir: Path, value: Any, key: str) -> None:
    """Any value for the target's file references and endpoints (NUL bytes, directories, huge strings) is
    handled as input: the profile loads or fails with one line naming it."""
    docs = base_documents(docs_dir)
    docs["profile"]["target"][key] = value
    profile = write_all(docs_dir, docs)
    try:
        prepare(profile)
    except HarnessError as exc:
        assert_one_line_error(exc, profile)


@FUZZ
@given(
    expressions=st.lists(
        TEXT | st.sampled_from(["p99(ttft) <", "rate(errors) < 1e999%", "p100(x) < 1ms"]), max_size=3
    )
)
def test_random_threshold_expressions_fail_with_one_line(docs_dir: Path, expressions: list[str]) -> None:
    """Random threshold strings in a profile parse or fail with one line naming the profile."""
    docs = base_documents(docs_dir)
    docs["profile"]["thresholds"] = expressions
    profile = write_all(docs_dir, docs)
    try:
        prepare(profile)
    except HarnessError as exc:
        assert_one_line_error(exc, profile)


BROKEN = {
    "bytes.toml": b"\x00\xff\xfe garbage",
    "wrong-type.toml": b'name = "x"\nduration_s = "ten"\n',
    "unicode-nul-huge.toml": 'name = "\u202e"\nduration_s = 1e400\n[target]\nfleet = "\\u0000"\n'.encode(),
    "newline-key.toml": b'"weird\\nkey" = 1\nname = "x"\n',
}


def test_cli_validate_exits_2_with_one_line_per_file(tmp_path: Path) -> None:
    """`harness profiles validate` on broken profiles exits 2 with one line per file, naming it."""
    paths = []
    for name, blob in BROKEN.items():
        (tmp_path / name).write_bytes(blob)
        paths.append(str(tmp_path / name))
    result = run_cli("profiles", "validate", *paths)
    assert result.returncode == ExitCode.INVALID_INPUT, result.stdout + result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == len(BROKEN), result.stderr
    for line, name in zip(lines, BROKEN, strict=True):
        assert name in line, line
