"""Every API the engine drives, and stateful sessions, end to end against the embedded mock fleet."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest

from harness.compliance import CompiledPolicy
from harness.compliance.judge import judge
from harness.errors import ProfileError
from harness.profile import load_policy
from harness.results.reader import read_ledger, read_records
from harness.runner import prepare, run_loaded

ROOT = Path(__file__).resolve().parent.parent
PROFILES = ROOT / "profiles"

RELAXED = """
[validity]
max_schedule_lag_p99_ms = 2000
max_event_loop_lag_p99_ms = 2000
"""

MIX = """
name = "mix"
seed = 3
duration_s = 2.5
[target]
fleet = "fleets/multicloud.toml"
[client]
transport = "{transport}"
{relaxed}
[[scenarios]]
name = "chat"
arrival = {{ process = "constant", rate_rps = 4 }}
routes = [{{ endpoint = "azure-eastus", deployment = "gpt-4o" }}]
[[scenarios]]
name = "completions"
api = "completions"
stream = false
arrival = {{ process = "constant", rate_rps = 3 }}
routes = [{{ endpoint = "azure-eastus", deployment = "gpt-4o-mini" }}]
[[scenarios]]
name = "embeddings"
api = "embeddings"
model = "text-embedding-3-small"
arrival = {{ process = "constant", rate_rps = 3 }}
routes = [{{ endpoint = "openai-on-azure", deployment = "gpt-4o-mini" }}]
[[scenarios]]
name = "responses-stateless"
api = "responses"
arrival = {{ process = "constant", rate_rps = 3 }}
routes = [{{ endpoint = "azure-swedencentral", deployment = "gpt-4o" }}]
[[scenarios]]
name = "bedrock"
api = "bedrock.converse"
model = "anthropic.claude-3-5-sonnet-20240620-v1:0"
arrival = {{ process = "constant", rate_rps = 3 }}
routes = [{{ endpoint = "bedrock-useast1", deployment = "anthropic.claude-3-5-sonnet-20240620-v1:0" }}]
[[scenarios]]
name = "bedrock-unary"
api = "bedrock.converse"
stream = false
model = "anthropic.claude-3-5-sonnet-20240620-v1:0"
arrival = {{ process = "constant", rate_rps = 2 }}
routes = [{{ endpoint = "bedrock-useast1", deployment = "anthropic.claude-3-5-sonnet-20240620-v1:0" }}]
[[scenarios]]
name = "vertex"
api = "vertex.generate_content"
model = "gemini-2.0-flash-001"
arrival = {{ process = "constant", rate_rps = 3 }}
routes = [{{ endpoint = "vertex-uscentral1", deployment = "gemini-2.0-flash-001" }}]
[[scenarios]]
name = "vertex-unary"
api = "vertex.generate_content"
stream = false
model = "gemini-2.0-flash-001"
arrival = {{ process = "constant", rate_rps = 2 }}
routes = [{{ endpoint = "vertex-uscentral1", deployment = "gemini-2.0-flash-001" }}]
[[scenarios]]
name = "sessions"
api = "responses"
arrival = {{ process = "constant", rate_rps = 2 }}
session = {{ turns = 3, think_time = {{ distribution = "constant", mean_ms = 30 }} }}
routes = [
  {{ endpoint = "openai-direct", deployment = "gpt-4o" }},
  {{ endpoint = "azure-eastus", deployment = "gpt-4o" }},
]
[[scenarios]]
name = "conversations"
api = "responses"
stream = false
arrival = {{ process = "constant", rate_rps = 1 }}
session = {{ turns = 2, chain = "conversation", think_time = {{ distribution = "constant", mean_ms = 20 }} }}
routes = [{{ endpoint = "azure-swedencentral", deployment = "gpt-4o" }}]
[[scenarios]]
name = "realtime"
api = "realtime"
arrival = {{ process = "constant", rate_rps = 1 }}
session = {{ turns = 3, think_time = {{ distribution = "uniform", min_ms = 10, max_ms = 40 }} }}
routes = [{{ endpoint = "azure-eastus", deployment = "gpt-4o" }}]
"""


def _profile_dir(tmp_path: Path) -> Path:
    for sub in ("fleets", "policies"):
        shutil.copytree(PROFILES / sub, tmp_path / sub)
    return tmp_path


async def _run(tmp_path: Path, text: str):  # type: ignore[no-untyped-def]
    path = _profile_dir(tmp_path) / "p.toml"
    path.write_text(text)
    loaded = prepare(path)
    return await run_loaded(loaded, tmp_path / "results", progress=False, report=False)


@pytest.fixture(scope="module", params=["aiohttp", "lean"])
def mix_run(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    import asyncio

    tmp = tmp_path_factory.mktemp(f"mix-{request.param}")
    outcome = asyncio.run(_run(tmp, MIX.format(transport=request.param, relaxed=RELAXED)))
    return outcome, read_records(outcome.run_dir), read_ledger(outcome.run_dir)


def test_every_api_is_driven_and_answers_ok(mix_run) -> None:  # type: ignore[no-untyped-def]
    """Each scenario's API reaches its dialect's mock and every request comes back ok with tokens."""
    outcome, records, _ = mix_run
    assert (records["outcome"] == "ok").all(), records.loc[
        records["outcome"] != "ok", "error_detail"
    ].tolist()
    apis = records.groupby("scenario")["api"].first().to_dict()
    assert apis == {
        "chat": "chat.completions",
        "completions": "completions",
        "embeddings": "embeddings",
        "responses-stateless": "responses",
        "bedrock": "bedrock.converse_stream",
        "bedrock-unary": "bedrock.converse",
        "vertex": "vertex.stream_generate_content",
        "vertex-unary": "vertex.generate_content",
        "sessions": "responses",
        "conversations": "responses",
        "realtime": "realtime",
    }
    generating = records[records["api"] != "embeddings"]
    assert (generating["tokens_out"] > 0).all()
    streamed = records[records["stream"]]
    assert (streamed["first_token_ns"] > streamed["sent_ns"]).all()
    assert (streamed["chunks"] > 0).all()
    assert outcome.compliance["verdict"] == "pass"
    assert outcome.compliance["reconciliation"]["consistent"]
    assert outcome.compliance["reconciliation"]["session_setup_calls"] == 3  # one per conversation session
    assert outcome.compliance["by_class"]["stateful"]["served"] == 5 * 3 + 3 * 2 + 3 * 3


def test_planned_requests_count_every_session_turn(mix_run) -> None:  # type: ignore[no-untyped-def]
    """Sessions plan one record per turn: the accounting invariant holds over turns."""
    outcome, records, _ = mix_run
    counts = outcome.summary["counts"]
    assert counts["planned"] == len(records)
    per_session = records[records["session_id"].notna()].groupby(["scenario", "session_id"]).size()
    assert per_session.loc["sessions"].eq(3).all()
    assert per_session.loc["conversations"].eq(2).all()
    assert per_session.loc["realtime"].eq(3).all()
    assert records["index"].is_unique


def test_session_turns_chain_and_stay_on_the_state_holder(mix_run) -> None:  # type: ignore[no-untyped-def]
    """Every turn after the first carries the previous turn's response id and the ledger shows it
    served by the endpoint that created that response."""
    _, records, ledger = mix_run
    by_id = ledger.set_index("request_id")
    sessions = records[records["scenario"] == "sessions"].sort_values(["session_id", "turn"])
    checked = 0
    for _, group in sessions.groupby("session_id"):
        turns = group.reset_index(drop=True)
        assert pd.isna(turns.loc[0, "previous_response_id"])
        for t in range(1, len(turns)):
            assert turns.loc[t, "previous_response_id"] == turns.loc[t - 1, "response_id"]
            served_by = by_id.loc[turns.loc[t, "request_id"], "endpoint"]
            holder = ledger.loc[ledger["response_id"] == turns.loc[t - 1, "response_id"], "endpoint"]
            assert list(holder) == [served_by] == [turns.loc[t, "endpoint"]]
            checked += 1
    assert checked == 5 * 2


def test_realtime_turns_are_ledgered_per_turn(mix_run) -> None:  # type: ignore[no-untyped-def]
    """A Realtime session's turns are separate records, ledgered as <session id>/<turn>."""
    _, records, ledger = mix_run
    rt = records[records["api"] == "realtime"].sort_values(["session_id", "turn"])
    for session_id, turns in rt.groupby("session_id"):
        assert list(turns["request_id"]) == [f"{session_id}/{t + 1}" for t in range(len(turns))]
        assert (turns["first_token_ns"] > turns["sent_ns"]).all()
        assert turns["sent_ns"].is_monotonic_increasing
    assert set(rt["request_id"]) <= set(ledger["request_id"])


async def test_a_broken_session_drops_its_remaining_turns(tmp_path: Path) -> None:
    """A session whose turn fails records its later turns as dropped/session_broken."""
    fleet = tmp_path / "fleets"
    _profile_dir(tmp_path)
    (fleet / "failing.toml").write_text(
        'name = "failing"\n[[endpoints]]\nname = "az"\ncloud = "azure"\nregion = "eastus"\n'
        'deployments = ["gpt-4o"]\nfaults = { error_rate = 1.0, error_status = 500 }\n'
    )
    text = f"""
name = "broken"
duration_s = 1
[target]
fleet = "fleets/failing.toml"
{RELAXED}
[[scenarios]]
name = "s"
api = "responses"
arrival = {{ process = "constant", rate_rps = 3 }}
session = {{ turns = 4, think_time = {{ distribution = "constant", mean_ms = 0 }} }}
routes = [{{ endpoint = "az", deployment = "gpt-4o" }}]
"""
    (tmp_path / "p.toml").write_text(text)
    outcome = await run_loaded(
        prepare(tmp_path / "p.toml"), tmp_path / "results", progress=False, report=False
    )
    records = read_records(outcome.run_dir)
    assert len(records) == 3 * 4
    first = records[records["turn"] == 0]
    assert (first["error_kind"] == "http_5xx").all()
    later = records[records["turn"] > 0]
    assert (later["outcome"] == "dropped").all() and (later["error_kind"] == "session_broken").all()
    c = outcome.summary["counts"]
    assert c["planned"] == c["error"] + c["dropped"] == 12


def _frame(rows: list[dict]) -> pd.DataFrame:  # type: ignore[type-arg]
    base = {
        "scenario": "s",
        "endpoint": "azure-eastus",
        "deployment": "gpt-4o",
        "api": "responses",
        "model": "gpt-4o",
        "tenant": "default",
        "sold_through": "direct",
        "store": True,
        "previous_response_id": None,
        "session_id": "sess",
        "error_detail": None,
        "status": 200,
        "outcome": "ok",
        "sent_ns": 1,
        "fp_cloud": "azure",
        "fp_region": "eastus",
        "mock_cloud": "azure",
        "mock_region": "eastus",
    }
    return pd.DataFrame([{**base, **r} for r in rows])


def _ledger(rows: list[tuple[str, str, str]]) -> pd.DataFrame:
    return pd.DataFrame(
        [{"request_id": rid, "endpoint": ep, "cloud": "azure", "region": region} for rid, ep, region in rows]
    )


def test_affinity_violations_are_judged_per_session() -> None:
    """A turn served by another backend than its session's, or told its state is gone, is an
    affinity violation under a state-holder rule; a session that stays put is not."""
    policy = CompiledPolicy(load_policy(PROFILES / "policies" / "azure-stateless-exclusive.toml"))
    records = _frame(
        [
            {"request_id": "a0", "turn": 0},
            {"request_id": "a1", "turn": 1, "previous_response_id": "r0"},
            {"request_id": "b0", "turn": 0, "session_id": "other"},
            {"request_id": "b1", "turn": 1, "session_id": "other", "previous_response_id": "r9"},
            {
                "request_id": "b2",
                "turn": 2,
                "session_id": "other",
                "previous_response_id": "r10",
                "status": 400,
                "outcome": "error",
                "error_detail": "previous_response_not_found: Previous response with id 'r10' not found.",
            },
        ]
    )
    ledger = _ledger(
        [
            ("a0", "azure-eastus", "eastus"),
            ("a1", "azure-eastus", "eastus"),
            ("b0", "azure-eastus", "eastus"),
            ("b1", "azure-sweden", "swedencentral"),
            ("b2", "azure-eastus", "eastus"),
        ]
    )
    result = judge(records, ledger, policy)
    assert result["by_kind"] == {"affinity": 2}
    assert sorted(v["request_id"] for v in result["violations"]) == ["b1", "b2"]


def test_ledger_rows_the_harness_never_sent_fail_the_judgement() -> None:
    """A request id in the ledgers that the harness never sent is a violation, not a footnote."""
    policy = CompiledPolicy(load_policy(PROFILES / "policies" / "azure-stateless-exclusive.toml"))
    records = _frame([{"request_id": "a0", "turn": 0}])
    ledger = _ledger([("a0", "azure-eastus", "eastus"), ("zz", "azure-eastus", "eastus")])
    result = judge(records, ledger, policy)
    assert result["verdict"] == "fail"
    assert result["by_kind"] == {"not_sent_by_harness": 1}
    assert result["reconciliation"]["in_ledger_not_sent"] == 1


@pytest.mark.parametrize(
    ("scenario", "message"),
    [
        (
            'api = "bedrock.converse"\nroutes = [{ endpoint = "azure-eastus", deployment = "gpt-4o" }]',
            "speaks azure_openai, which cannot serve api 'bedrock.converse'",
        ),
        (
            'api = "realtime"\nroutes = [{ endpoint = "azure-eastus", deployment = "gpt-4o" }]',
            "realtime runs as sessions",
        ),
        (
            'session = { turns = 2 }\nroutes = [{ endpoint = "azure-eastus", deployment = "gpt-4o" }]',
            "sessions chain server-side state",
        ),
        (
            'api = "responses"\nstore = false\nsession = { turns = 2 }\n'
            'routes = [{ endpoint = "azure-eastus", deployment = "gpt-4o" }]',
            "set store = true",
        ),
    ],
)
def test_api_options_are_validated_before_anything_starts(
    tmp_path: Path, scenario: str, message: str
) -> None:
    """A scenario asking an endpoint for an API its dialect lacks, or a session where none can
    exist, is refused with the key and the fix."""
    _profile_dir(tmp_path)
    (tmp_path / "p.toml").write_text(
        'name = "bad"\nduration_s = 1\n[target]\nfleet = "fleets/multicloud.toml"\n'
        '[[scenarios]]\nname = "s"\n'
        f'arrival = {{ process = "constant", rate_rps = 1 }}\n{scenario}\n'
    )
    with pytest.raises(ProfileError) as err:
        prepare(tmp_path / "p.toml")
    assert message in err.value.one_line()


def test_compliance_file_lists_session_fields(mix_run) -> None:  # type: ignore[no-untyped-def]
    """compliance.json is written with the schema's class breakdown."""
    outcome, _, _ = mix_run
    data = json.loads((outcome.run_dir / "compliance.json").read_text())
    assert data["schema_version"] == 2
    assert set(data["by_class"]) == {"stateful", "stateless"}


def test_eu_residency_policy_keeps_the_eu_tenant_in_eu_regions() -> None:
    """Under the data-residency example, the EU tenant's call served in eastus violates the EU rule,
    the same call for another tenant does not."""
    policy = CompiledPolicy(load_policy(PROFILES / "policies" / "eu-data-residency.toml"))
    records = _frame(
        [
            {"request_id": "eu-us", "api": "chat.completions", "store": None, "tenant": "contoso-eu"},
            {"request_id": "eu-se", "api": "chat.completions", "store": None, "tenant": "contoso-eu"},
            {"request_id": "us-us", "api": "chat.completions", "store": None},
        ]
    ).assign(session_id=None, turn=None)
    ledger = _ledger(
        [
            ("eu-us", "azure-eastus", "eastus"),
            ("eu-se", "azure-sweden", "swedencentral"),
            ("us-us", "a", "eastus"),
        ]
    )
    result = judge(records, ledger, policy)
    assert [(v["request_id"], v["rule"]) for v in result["violations"]] == [
        ("eu-us", "eu-stateless-openai-azure-eu")
    ]
