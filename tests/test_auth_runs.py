"""Authenticated dialects through a whole run: the engine signs or bears credentials on every
request and the verifying mocks accept them (and would reject a tampered one: tests/test_auth.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.results.reader import read_ledger, read_records
from harness.runner import prepare, run_loaded

ROOT = Path(__file__).resolve().parent.parent

FLEET = """
name = "verifying"
[[endpoints]]
name = "bedrock"
cloud = "aws"
dialect = "bedrock"
region = "us-east-1"
deployments = ["anthropic.claude-3-5-sonnet-20240620-v1:0"]
auth_verify = "sigv4"
latency = { ttft_base_ms = 5, itl_ms = 1 }
[[endpoints]]
name = "vertex"
cloud = "gcp"
dialect = "vertex"
region = "us-central1"
deployments = ["gemini-2.0-flash-001"]
auth_verify = "bearer"
latency = { ttft_base_ms = 5, itl_ms = 1 }
"""

PROFILE = """
name = "signed"
duration_s = 1.5
[target]
fleet = "fleet.toml"
policy = "{policy}"
[client]
transport = "{transport}"
[validity]
max_schedule_lag_p99_ms = 5000
max_event_loop_lag_p99_ms = 5000
[[scenarios]]
name = "claude"
api = "bedrock.converse"
model = "anthropic.claude-3-5-sonnet-20240620-v1:0"
arrival = {{ process = "constant", rate_rps = 10 }}
routes = [{{ endpoint = "bedrock", deployment = "anthropic.claude-3-5-sonnet-20240620-v1:0" }}]
[[scenarios]]
name = "gemini"
api = "vertex.generate_content"
model = "gemini-2.0-flash-001"
arrival = {{ process = "constant", rate_rps = 10 }}
routes = [{{ endpoint = "vertex", deployment = "gemini-2.0-flash-001" }}]
"""


@pytest.mark.parametrize("transport", ["aiohttp", "lean"])
async def test_sigv4_and_bearer_runs_are_accepted_by_verifying_mocks(tmp_path: Path, transport: str) -> None:
    """A run against SigV4- and bearer-verifying mocks: every request authenticated and served."""
    (tmp_path / "fleet.toml").write_text(FLEET)
    policy = ROOT / "profiles" / "policies" / "azure-stateless-exclusive.toml"
    (tmp_path / "p.toml").write_text(PROFILE.format(policy=policy, transport=transport))
    outcome = await run_loaded(
        prepare(tmp_path / "p.toml"), tmp_path / "results", progress=False, report=False
    )
    records = read_records(outcome.run_dir)
    assert len(records) == 30
    assert (records["outcome"] == "ok").all(), records["error_detail"].dropna().unique().tolist()
    assert (read_ledger(outcome.run_dir)["status"] == 200).all()
