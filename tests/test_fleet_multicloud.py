"""The multicloud fleet file as a subprocess: every dialect answers its own official SDK, and the
ledger attributes each request to the cloud that hosts it."""

from __future__ import annotations

import asyncio

import pytest

from harness.mocks.process import FleetProcess
from tests.conftest import PROFILES

boto3 = pytest.importorskip("boto3")
genai = pytest.importorskip("google.genai")


def _by_name(endpoints: list[dict]) -> dict[str, dict]:
    return {e["name"]: e for e in endpoints}


def _drive_every_sdk(eps: dict[str, dict]) -> None:
    import botocore.config
    import google.oauth2.credentials
    from google.genai import types
    from openai import AzureOpenAI, OpenAI

    azure = AzureOpenAI(
        azure_endpoint=eps["azure-eastus"]["base_url"],
        api_key="k",
        api_version="2024-10-21",
        max_retries=0,
        default_headers={"x-ms-client-request-id": "t-azure"},
    )
    assert (
        azure.chat.completions.create(
            model="gpt-4o", messages=[{"role": "user", "content": "hi"}], max_tokens=3
        )
        .choices[0]
        .message.content
    )
    direct = OpenAI(
        base_url=eps["openai-direct"]["base_url"] + "/v1",
        api_key="k",
        max_retries=0,
        default_headers={"x-ms-client-request-id": "t-openai"},
    )
    assert len(direct.embeddings.create(model="text-embedding-3-small", input="x").data[0].embedding) > 0
    bedrock = boto3.client(
        "bedrock-runtime",
        endpoint_url=eps["bedrock-useast1"]["base_url"],
        region_name="us-east-1",
        aws_access_key_id="AKIDEXAMPLE",
        aws_secret_access_key="secret",
        config=botocore.config.Config(retries={"total_max_attempts": 1}),
    )
    reply = bedrock.converse(
        modelId="anthropic.claude-3-5-sonnet-20240620-v1:0",
        messages=[{"role": "user", "content": [{"text": "hi"}]}],
        inferenceConfig={"maxTokens": 3},
    )
    assert reply["usage"]["outputTokens"] == 3
    vertex = genai.Client(
        vertexai=True,
        project="p",
        location="us-central1",
        credentials=google.oauth2.credentials.Credentials(token="ya29.dummy"),
        http_options=types.HttpOptions(base_url=eps["vertex-uscentral1"]["base_url"], api_version="v1"),
    )
    assert vertex.models.generate_content(model="gemini-2.0-flash-001", contents="hi").text


async def test_multicloud_fleet_serves_every_dialect(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every dialect of one fleet answers its official SDK, and the ledger says which cloud served it."""
    for var in (
        "GOOGLE_CLOUD_PROJECT",
        "GOOGLE_CLOUD_LOCATION",
        "GOOGLE_API_KEY",
        "GEMINI_API_KEY",
        "GOOGLE_GENAI_USE_VERTEXAI",
    ):
        monkeypatch.delenv(var, raising=False)
    async with FleetProcess(PROFILES / "fleets/multicloud.toml") as fleet:
        eps = _by_name(fleet.endpoints)
        assert {e["dialect"] for e in eps.values()} == {"azure_openai", "openai", "bedrock", "vertex"}
        await asyncio.to_thread(_drive_every_sdk, eps)
        ledger = (await fleet.fetch_ledger()).to_pandas()
    served = {(r.endpoint, r.cloud, r.api) for r in ledger.itertuples()}
    assert served == {
        ("azure-eastus", "azure", "chat.completions"),
        ("openai-direct", "openai", "embeddings"),
        ("bedrock-useast1", "aws", "bedrock.converse"),
        ("vertex-uscentral1", "gcp", "vertex.generate_content"),
    }
    assert set(ledger.loc[ledger["endpoint"] == "azure-eastus", "request_id"]) == {"t-azure"}
