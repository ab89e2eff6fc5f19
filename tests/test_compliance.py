"""Classification, policy decisions and judgement of records against ledgers."""

from __future__ import annotations

import pandas as pd

from harness.compliance import CompiledPolicy, judge, model_family, request_class
from harness.profile import load_policy
from tests.conftest import PROFILES

POLICY = CompiledPolicy(load_policy(PROFILES / "policies/azure-stateless-exclusive.toml"))


def test_request_class_from_api_semantics() -> None:
    """Stateless vs stateful follows the API and its state flags, not labels."""
    assert request_class("chat.completions") == "stateless"
    assert request_class("embeddings") == "stateless"
    assert request_class("responses", store=False) == "stateless"
    assert request_class("responses") == "stateful"  # store defaults to true server-side
    assert request_class("responses", store=False, previous_response_id="resp_1") == "stateful"
    assert request_class("responses", store=False, conversation="conv_1") == "stateful"
    assert request_class("realtime") == "stateful"


def test_model_family() -> None:
    """OpenAI models are recognised by name, including vendor prefixes; others are 'other'."""
    for m in ("gpt-4o", "o3-mini", "text-embedding-3-small", "openai/gpt-4.1", "openai.gpt-oss-120b-1:0"):
        assert model_family(m) == "openai", m
    for m in ("anthropic.claude-3-5-sonnet-20240620-v1:0", "gemini-2.0-flash-001", "meta-llama/Llama-3-8B"):
        assert model_family(m) == "other", m


def test_default_policy_decisions() -> None:
    """The 2026 terms: stateless OpenAI on Azure only (partner-sold too); stateful anywhere permitted."""
    d = POLICY.decide
    assert d("stateless", "openai", "chat.completions", "t", "direct", "azure", "eastus").allowed
    assert not d("stateless", "openai", "chat.completions", "t", "direct", "aws", "us-east-1").allowed
    assert not d("stateless", "openai", "chat.completions", "t", "amazon-bedrock", "aws", "us-east-1").allowed
    assert not d("stateless", "openai", "chat.completions", "t", "direct", None, None).allowed
    assert d("stateful", "openai", "responses", "t", "direct", "aws", "us-east-1").allowed
    assert d("stateless", "other", "bedrock.converse", "t", "direct", "aws", "us-east-1").allowed


def _records(rows: list[dict]) -> pd.DataFrame:
    base = {
        "scenario": "chat",
        "endpoint": "e",
        "deployment": "gpt-4o",
        "api": "chat.completions",
        "model": "gpt-4o",
        "tenant": "default",
        "sold_through": "direct",
        "store": None,
        "previous_response_id": None,
        "status": 200,
        "outcome": "ok",
        "fp_cloud": "azure",
        "fp_region": "eastus",
        "mock_cloud": "azure",
        "mock_region": "eastus",
        "sent_ns": 1,
    }
    return pd.DataFrame([{**base, **r} for r in rows])


def _ledger(rows: list[dict]) -> pd.DataFrame:
    return pd.DataFrame([{"cloud": "azure", "region": "eastus", **r} for r in rows])


def test_judge_uses_ledger_as_ground_truth() -> None:
    """A request the ledger says AWS served is a cloud violation even if its headers look Azure."""
    records = _records([{"request_id": "a"}, {"request_id": "b"}])
    ledger = _ledger([{"request_id": "a"}, {"request_id": "b", "cloud": "aws", "region": "us-east-1"}])
    result = judge(records, ledger, POLICY)
    assert result["verdict"] == "fail"
    assert result["violations_total"] == 1
    v = result["violations"][0]
    assert (v["request_id"], v["kind"], v["served_cloud"]) == ("b", "attestation_mismatch", "aws")


def test_judge_clean_run_passes_and_reconciles() -> None:
    """A run served on Azure passes; every sent request appears once in the ledger."""
    records = _records([{"request_id": str(i)} for i in range(5)])
    ledger = _ledger([{"request_id": str(i)} for i in range(5)])
    result = judge(records, ledger, POLICY)
    assert result["verdict"] == "pass"
    assert result["reconciliation"]["consistent"]
    assert result["reconciliation"]["sent_not_in_ledger"] == 0


def test_judge_flags_double_serving_and_unknown_requests() -> None:
    """A request served twice is a violation; a ledger row the harness never sent is one too."""
    records = _records([{"request_id": "a"}])
    ledger = _ledger([{"request_id": "a"}, {"request_id": "a"}, {"request_id": "zzz"}])
    result = judge(records, ledger, POLICY)
    assert result["by_kind"] == {"served_twice": 1, "not_sent_by_harness": 1}
    assert result["violations_total"] == 2
    assert result["reconciliation"]["in_ledger_not_sent"] == 1


def test_unserved_requests_are_not_judged() -> None:
    """Dropped requests and connection failures never reached a cloud and are not violations."""
    records = _records(
        [
            {
                "request_id": "a",
                "status": 0,
                "outcome": "dropped",
                "fp_cloud": None,
                "mock_cloud": None,
                "sent_ns": None,
            }
        ]
    )
    result = judge(records, None, POLICY)
    assert result["judged"] == 0
    assert result["verdict"] == "pass"


def test_unattributable_stateless_call_is_a_violation() -> None:
    """A served stateless OpenAI call with no fingerprint and no ledger row cannot pass the gate."""
    records = _records(
        [{"request_id": "a", "fp_cloud": None, "fp_region": None, "mock_cloud": None, "mock_region": None}]
    )
    result = judge(records, None, POLICY)
    assert result["by_kind"] == {"unattributed": 1}
    declared = judge(records, None, POLICY, declared_clouds={"e": "azure"})
    assert declared["verdict"] == "pass"
