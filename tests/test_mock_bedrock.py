"""The Bedrock dialect: sans-IO request builders and parsers, and the mock Bedrock runtime driven by
unchanged boto3 against a real port-0 server."""

from __future__ import annotations

import asyncio
import base64
import json
import pickle
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import aiohttp
import boto3
import botocore.config
import botocore.eventstream
import botocore.exceptions
import pytest
from aiohttp import web

from harness.mocks import Ledger, start_fleet
from harness.mocks.bedrock import make_bedrock_app
from harness.mocks.runtime import NO_FAULTS, Admission, EndpointRuntime, FaultPlan, Rejection
from harness.profile.models import Fleet, FleetEndpoint, Latency
from harness.protocols import bedrock as wire, eventstream as es
from harness.protocols.fingerprint import attribute
from harness.results.schema import LEDGER_FIELDS, LEDGER_STATUS_NOT_SENT

T = TypeVar("T")

MODEL = "anthropic.claude-3-5-sonnet-20240620-v1:0"
ARN = "arn:aws:bedrock:us-west-2:123456789012:inference-profile/us.anthropic.claude-3-5-sonnet-20240620-v1:0"
LLAMA = "meta.llama3-8b-instruct-v1:0"
FAST = Latency(ttft_base_ms=2, prefill_us_per_token=0, itl_ms=1, jitter_frac=0)
PROMPT = "say hello to the world"  # 5 approximate tokens
ANTHROPIC_BODY = json.dumps(
    {
        "anthropic_version": "bedrock-2023-05-31",
        "max_tokens": 4,
        "messages": [{"role": "user", "content": PROMPT}],
    }
)
CONVERSE_MESSAGES = [{"role": "user", "content": [{"text": PROMPT}]}]


def endpoint(latency: Latency = FAST) -> FleetEndpoint:
    return FleetEndpoint(
        name="bedrock-use1",
        cloud="aws",
        dialect="bedrock",
        region="us-east-1",
        deployments=[MODEL, ARN, LLAMA],
        latency=latency,
    )


class ScriptedRuntime(EndpointRuntime):
    """A runtime whose admission is fixed by the test; counts admissions and releases."""

    def __init__(
        self,
        ledger: Ledger,
        *,
        rejection: Rejection | None = None,
        plan: FaultPlan = NO_FAULTS,
        latency: Latency = FAST,
    ) -> None:
        super().__init__(endpoint(latency), ledger, 7)
        self.rejection = rejection
        self.plan = plan
        self.admitted: list[tuple[str, int]] = []
        self.released = 0

    def _release(self) -> None:
        self.released += 1

    async def admit(self, deployment: str, est_tokens: int) -> Admission:
        self.admitted.append((deployment, est_tokens))
        return Admission(self.rejection, self.plan, release=self._release)


@asynccontextmanager
async def serve(runtime: EndpointRuntime) -> AsyncIterator[str]:
    runner = web.AppRunner(make_bedrock_app(runtime), shutdown_timeout=1.0)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()


def make_client(url: str) -> Any:
    return boto3.client(
        "bedrock-runtime",
        endpoint_url=url,
        region_name="us-east-1",
        aws_access_key_id="AKIDEXAMPLE",
        aws_secret_access_key="secret",
        config=botocore.config.Config(retries={"max_attempts": 1, "mode": "standard"}),
    )


async def in_thread(fn: Callable[[], T]) -> T:
    """Run blocking boto3 code off the loop that serves the mock (bounded in time)."""
    return await asyncio.wait_for(asyncio.to_thread(fn), timeout=30)


async def post_raw(
    url: str, req: wire.BedrockRequestTemplate, request_id: str
) -> tuple[int, Any, list[bytes]]:
    """Send a template's request with aiohttp; status, headers and the body reads (kept on a reset)."""
    reads: list[bytes] = []
    async with (
        aiohttp.ClientSession() as session,
        session.post(url + req.path, data=req.body, headers=req.headers_for(request_id)) as resp,
    ):
        try:
            async for data in resp.content.iter_any():
                reads.append(data)  # noqa: PERF401 (keep the reads that arrived before a reset)
        except (aiohttp.ClientPayloadError, aiohttp.ServerDisconnectedError):
            pass
        return resp.status, resp.headers, reads


def template(url: str, model: str, operation: str, max_tokens: int = 4) -> wire.BedrockRequestTemplate:
    return wire.BedrockRequestTemplate(url, model, operation, prompt=PROMPT, max_tokens=max_tokens)


def rows(ledger: Ledger) -> list[dict[str, Any]]:
    return ledger.to_table().to_pylist()


async def wait_rows(ledger: Ledger, n: int) -> list[dict[str, Any]]:
    """The ledger once it has n rows (a handler notices a gone client on its next write)."""
    for _ in range(500):
        if len(ledger) >= n:
            break
        await asyncio.sleep(0.01)
    return rows(ledger)


# --------------------------------------------------------------------------- sans-IO


def test_paths_are_percent_encoded_like_botocore_and_split_back() -> None:
    """Model ids with ':' and ARNs with '/' are encoded as botocore does, and split back from raw paths."""
    assert wire.model_path(MODEL, "converse") == "/model/anthropic.claude-3-5-sonnet-20240620-v1%3A0/converse"
    assert wire.model_path(ARN, "invoke").startswith(
        "/model/arn%3Aaws%3Abedrock%3Aus-west-2%3A123456789012%3Ainference-profile%2Fus.anthropic."
    )
    assert wire.split_model_path(wire.model_path(ARN, "converse-stream")) == (ARN, "converse-stream")
    assert wire.split_model_path(f"/model/{MODEL}/invoke?x=1") == (MODEL, "invoke")
    assert wire.split_model_path("/model/converse") is None
    assert wire.split_model_path("/other/x/converse") is None
    with pytest.raises(ValueError, match="unknown Bedrock operation"):
        wire.model_path(MODEL, "count-tokens")


async def test_templates_send_what_boto3_sends() -> None:
    """For all four operations the template's path, content headers and body equal boto3's request."""
    seen: list[tuple[str, Any, bytes]] = []

    async def capture(request: web.Request) -> web.Response:
        seen.append((request.raw_path, request.headers, await request.read()))
        return web.Response(
            status=400,
            body=b'{"message":"captured"}',
            headers={"x-amzn-ErrorType": "ValidationException" + wire.ERROR_TYPE_SUFFIX},
        )

    app = web.Application()
    app.router.add_post("/{tail:.+}", capture)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    url = f"http://127.0.0.1:{runner.addresses[0][1]}"
    try:
        client = make_client(url)
        anthropic = template(url, ARN, "invoke").body
        calls = [
            lambda: client.converse(
                modelId=ARN, messages=CONVERSE_MESSAGES, inferenceConfig={"maxTokens": 4}
            ),
            lambda: client.converse_stream(
                modelId=ARN, messages=CONVERSE_MESSAGES, inferenceConfig={"maxTokens": 4}
            ),
            lambda: client.invoke_model(
                modelId=ARN, body=anthropic, contentType="application/json", accept="application/json"
            ),
            lambda: client.invoke_model_with_response_stream(
                modelId=ARN, body=anthropic, contentType="application/json", accept="application/json"
            ),
        ]
        for call in calls:
            with pytest.raises(botocore.exceptions.ClientError, match="captured"):
                await in_thread(call)
    finally:
        await runner.cleanup()
    for operation, (raw_path, headers, body) in zip(wire.OPERATIONS, seen, strict=True):
        ours = template(url, ARN, operation)
        assert ours.path == raw_path
        mine = ours.headers_for("rid")
        for name in ("Content-Type", "Accept", "X-Amzn-Bedrock-Accept"):
            assert mine.get(name) == headers.get(name), (operation, name)
        assert json.loads(ours.body) == json.loads(body)
        assert mine["amz-sdk-invocation-id"] == "rid"


def test_template_pickles_by_configuration_and_refuses_non_anthropic_invoke() -> None:
    """A template survives pickling unchanged; InvokeModel bodies for non-Anthropic models are refused."""
    t = template("http://h:1/", MODEL, "invoke-with-response-stream")
    t2 = pickle.loads(pickle.dumps(t))
    assert (t2.url, t2.body, t2.headers_for("a"), t2.stream, t2.api) == (
        t.url,
        t.body,
        t.headers_for("a"),
        True,
        "bedrock.invoke_stream",
    )
    assert t.url == "http://h:1/model/anthropic.claude-3-5-sonnet-20240620-v1%3A0/invoke-with-response-stream"
    with pytest.raises(ValueError, match="Anthropic"):
        template("http://h:1", LLAMA, "invoke")
    assert template("http://h:1", LLAMA, "converse").api == "bedrock.converse"


def converse_stream_body(*deltas: dict[str, Any], tail: bool = True) -> bytes:
    frames = [wire.MESSAGE_START_FRAME]
    frames += [es.event_message("contentBlockDelta", {"contentBlockIndex": 0, "delta": d}) for d in deltas]
    if tail:
        frames += [
            wire.CONTENT_BLOCK_STOP_FRAME,
            wire.message_stop_frame("end_turn"),
            wire.metadata_frame(3, 2, 10),
        ]
    return b"".join(frames)


def test_parser_counts_text_tool_and_reasoning_deltas() -> None:
    """Text, tool-input and reasoning deltas are content; block starts, stops and empty deltas are not."""
    body = converse_stream_body(
        {"text": "two words"},
        {"text": ""},
        {"toolUse": {"input": '{"a": 1}'}},
        {"reasoningContent": {"text": "hmm"}},
    )
    body = (
        body[: len(wire.MESSAGE_START_FRAME)]
        + es.event_message(
            "contentBlockStart",
            {"contentBlockIndex": 1, "start": {"toolUse": {"toolUseId": "t", "name": "f"}}},
        )
        + body[len(wire.MESSAGE_START_FRAME) :]
    )
    assert wire.stream_events([body]) == [
        ("token", 2),
        ("token", 2),
        ("token", 1),
        ("finish", "end_turn"),
        ("usage", 3, 2),
        ("done",),
    ]
    parser = wire.BedrockStreamParser()
    assert parser.feed(body) == 3
    assert (parser.content_chunks, parser.tokens_out_approx, parser.usage_out, parser.done) == (3, 5, 2, True)
    assert parser.feed(body) == 0  # after the final event, bytes are ignored


def test_parser_turns_exceptions_errors_and_truncation_into_error_events() -> None:
    """Exception and error frames end the stream as stream_error; cuts as reset; bad payloads as protocol."""
    throttled = converse_stream_body({"text": "a"}, tail=False) + es.exception_message(
        "throttlingException", "Too many tokens, please wait before trying again."
    )
    events = wire.stream_events([throttled])
    assert events == [
        ("token", 1),
        ("error", "throttlingException: Too many tokens, please wait before trying again."),
    ]
    assert wire.error_kind(events[-1][1]) == "stream_error"
    [err] = wire.stream_events([es.error_message("InternalFailure", "boom")])
    assert err == ("error", "InternalFailure: boom")

    complete = converse_stream_body({"text": "a"})
    cut_before_metadata = complete[: -len(wire.metadata_frame(3, 2, 10))]
    assert wire.stream_events([cut_before_metadata])[-1] == ("error", wire.TRUNCATED)
    assert wire.stream_events([complete[:-3]])[-1] == ("error", es.TRUNCATED_FRAME)
    assert {wire.error_kind(wire.TRUNCATED), wire.error_kind(es.TRUNCATED_FRAME)} == {"reset"}

    bad_json = es.event_message("contentBlockDelta", b"{not json")
    [bad] = wire.stream_events([bad_json])
    assert bad[1].startswith(wire.MALFORMED_EVENT) and wire.error_kind(bad[1]) == "protocol"
    bad_b64 = es.event_message("chunk", {"bytes": "!!!"})
    assert wire.error_kind(wire.stream_events([bad_b64])[0][1]) == "protocol"
    bad_crc = wire.stream_events([es.corrupt_crc(complete)])
    assert wire.error_kind(bad_crc[-1][1]) == "protocol"


def test_invoke_stream_usage_falls_back_to_anthropic_usage() -> None:
    """Without invocation metrics, usage comes from message_start input and message_delta output tokens."""
    body = b"".join(
        [
            wire.chunk_frame(wire.anthropic_message_start("msg_1", MODEL, 9)),
            wire.chunk_frame(wire.ANTHROPIC_BLOCK_START),
            wire.anthropic_text_delta_frame(" hi"),
            wire.chunk_frame(
                {
                    "type": "content_block_delta",
                    "index": 0,
                    "delta": {"type": "input_json_delta", "partial_json": "{}"},
                }
            ),
            wire.chunk_frame(wire.anthropic_message_delta("end_turn", 2)),
            wire.chunk_frame({"type": "message_stop"}),
        ]
    )
    assert wire.stream_events([body]) == [
        ("id", "msg_1"),
        ("token", 1),
        ("token", 1),
        ("finish", "end_turn"),
        ("usage", 9, 2),
        ("done",),
    ]
    error = wire.chunk_frame(
        {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}
    )
    assert wire.stream_events([error]) == [("error", "overloaded_error: Overloaded")]


def test_non_stream_bodies_and_error_bodies_parse() -> None:
    """Converse and Anthropic bodies give text, usage, stop reason; error bodies botocore's code, message."""
    converse = wire.parse_converse_response(wire.converse_response_body(" a b", "end_turn", 5, 2, 30))
    assert converse == wire.BedrockResult(" a b", 2, 5, 2, None, "end_turn", None)
    invoke = wire.parse_invoke_response(
        wire.anthropic_response_body("msg_x", MODEL, " a", "max_tokens", 5, 1)
    )
    assert invoke == wire.BedrockResult(" a", 1, 5, 1, "msg_x", "max_tokens", None)
    assert wire.parse_converse_response(b"[]").error is not None
    assert wire.parse_invoke_response(b"nope").error == "malformed body: nope"
    assert wire.parse_error_body(b'{"message":"m"}', "ThrottlingException" + wire.ERROR_TYPE_SUFFIX) == (
        "ThrottlingException",
        "m",
    )
    assert wire.parse_error_body(b'{"__type":"com.amazon#ValidationException","Message":"v"}') == (
        "ValidationException",
        "v",
    )
    assert wire.parse_error_body(b"<html>bad gateway</html>") == (None, "<html>bad gateway</html>")


# --------------------------------------------------------------------------- the mock, through boto3


async def test_converse_through_boto3() -> None:
    """Converse returns the reply text, usage, stop reason and latency, and writes one ledger row."""
    ledger = Ledger()
    runtime = ScriptedRuntime(ledger)
    async with serve(runtime) as url:
        client = make_client(url)
        resp = await in_thread(
            lambda: client.converse(
                modelId=MODEL,
                messages=CONVERSE_MESSAGES,
                system=[{"text": "be brief"}],
                inferenceConfig={"maxTokens": 3},
            )
        )
    assert resp["output"] == {"message": {"role": "assistant", "content": [{"text": " the of and"}]}}
    assert resp["usage"] == {"inputTokens": 7, "outputTokens": 3, "totalTokens": 10}
    assert resp["stopReason"] == "max_tokens"
    assert resp["metrics"]["latencyMs"] >= 2
    headers = resp["ResponseMetadata"]["HTTPHeaders"]
    assert attribute(headers).cloud == "aws"
    assert (headers["x-mock-cloud"], headers["x-mock-region"]) == ("aws", "us-east-1")
    assert runtime.admitted == [(MODEL, 10)]
    assert runtime.released == 1
    [row] = rows(ledger)
    assert tuple(row) == LEDGER_FIELDS
    assert {
        k: row[k] for k in ("api", "deployment", "status", "stream", "tokens_in", "tokens_out", "stateful")
    } == {
        "api": "bedrock.converse",
        "deployment": MODEL,
        "status": 200,
        "stream": False,
        "tokens_in": 7,
        "tokens_out": 3,
        "stateful": False,
    }
    assert row["response_id"] is None
    assert len(row["request_id"]) == 36  # boto3's amz-sdk-invocation-id (a UUID)


async def test_converse_stream_through_boto3() -> None:
    """ConverseStream yields messageStart, a delta per token, contentBlockStop, messageStop and metadata."""
    ledger = Ledger()
    async with serve(ScriptedRuntime(ledger)) as url:
        client = make_client(url)

        def run() -> list[dict[str, Any]]:
            resp = client.converse_stream(
                modelId=MODEL, messages=CONVERSE_MESSAGES, inferenceConfig={"maxTokens": 3}
            )
            return list(resp["stream"])

        events = await in_thread(run)
    metadata = events[-1]["metadata"]
    assert events[:-1] == [
        {"messageStart": {"role": "assistant"}},
        {"contentBlockDelta": {"contentBlockIndex": 0, "delta": {"text": " the"}}},
        {"contentBlockDelta": {"contentBlockIndex": 0, "delta": {"text": " of"}}},
        {"contentBlockDelta": {"contentBlockIndex": 0, "delta": {"text": " and"}}},
        {"contentBlockStop": {"contentBlockIndex": 0}},
        {"messageStop": {"stopReason": "max_tokens"}},
    ]
    assert metadata["usage"] == {"inputTokens": 5, "outputTokens": 3, "totalTokens": 8}
    assert metadata["metrics"]["latencyMs"] >= 2
    [row] = rows(ledger)
    assert (row["api"], row["stream"], row["status"], row["tokens_out"]) == (
        "bedrock.converse_stream",
        True,
        200,
        3,
    )


async def test_invoke_model_through_boto3() -> None:
    """InvokeModel answers an Anthropic Messages body with Anthropic's reply and X-Amzn-Bedrock-* headers."""
    ledger = Ledger()
    async with serve(ScriptedRuntime(ledger)) as url:
        client = make_client(url)

        def run() -> tuple[dict[str, Any], dict[str, Any]]:
            resp = client.invoke_model(modelId=MODEL, body=ANTHROPIC_BODY)
            return json.loads(resp["body"].read()), resp

        body, resp = await in_thread(run)
    assert resp["contentType"] == "application/json"
    headers = resp["ResponseMetadata"]["HTTPHeaders"]
    assert headers["x-amzn-bedrock-input-token-count"] == "5"
    assert headers["x-amzn-bedrock-output-token-count"] == "4"
    assert int(headers["x-amzn-bedrock-invocation-latency"]) >= 2
    assert body["id"].startswith("msg_bdrk_")
    assert {k: body[k] for k in ("type", "role", "content", "stop_reason", "stop_sequence", "usage")} == {
        "type": "message",
        "role": "assistant",
        "content": [{"type": "text", "text": " the of and to"}],
        "stop_reason": "max_tokens",
        "stop_sequence": None,
        "usage": {"input_tokens": 5, "output_tokens": 4},
    }
    [row] = rows(ledger)
    assert (row["api"], row["response_id"], row["tokens_out"]) == ("bedrock.invoke", body["id"], 4)


async def test_invoke_model_with_response_stream_through_boto3() -> None:
    """The chunks decode to Anthropic stream events; the last carries amazon-bedrock-invocationMetrics."""
    ledger = Ledger()
    async with serve(ScriptedRuntime(ledger)) as url:
        client = make_client(url)

        def run() -> tuple[str, list[dict[str, Any]]]:
            resp = client.invoke_model_with_response_stream(modelId=MODEL, body=ANTHROPIC_BODY)
            return resp["contentType"], [json.loads(ev["chunk"]["bytes"]) for ev in resp["body"]]

        content_type, chunks = await in_thread(run)
    assert content_type == "application/json"
    assert [c["type"] for c in chunks] == [
        "message_start",
        "content_block_start",
        *["content_block_delta"] * 4,
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    assert "".join(c["delta"]["text"] for c in chunks[2:6]) == " the of and to"
    assert chunks[0]["message"]["usage"]["input_tokens"] == 5
    assert chunks[-2]["delta"]["stop_reason"] == "max_tokens"
    metrics = chunks[-1]["amazon-bedrock-invocationMetrics"]
    assert (metrics["inputTokenCount"], metrics["outputTokenCount"]) == (5, 4)
    assert metrics["invocationLatency"] >= metrics["firstByteLatency"] >= 2
    [row] = rows(ledger)
    assert (row["api"], row["stream"], row["response_id"]) == (
        "bedrock.invoke_stream",
        True,
        chunks[0]["message"]["id"],
    )


async def test_colon_ids_and_inference_profile_arns_route_whole() -> None:
    """Model ids with ':' and inference-profile ARNs with '/' arrive whole and are ledgered as given."""
    ledger = Ledger()
    async with serve(ScriptedRuntime(ledger)) as url:
        client = make_client(url)
        for model in (MODEL, ARN, LLAMA):
            resp = await in_thread(
                lambda m=model: client.converse(
                    modelId=m, messages=CONVERSE_MESSAGES, inferenceConfig={"maxTokens": 1}
                )
            )
            assert resp["usage"]["outputTokens"] == 1
        # aiohttp sends ':' unencoded (yarl normalises %3A); it reaches the same model
        status, _, _ = await post_raw(url, template(url, MODEL, "converse"), "raw-colon")
        assert status == 200
    assert [r["deployment"] for r in rows(ledger)] == [MODEL, ARN, LLAMA, MODEL]


async def test_unknown_model_and_operation_are_validation_errors() -> None:
    """An unknown model and an unknown operation answer ValidationException 400 with Bedrock's messages."""
    ledger = Ledger()
    runtime = ScriptedRuntime(ledger)
    async with serve(runtime) as url:
        client = make_client(url)
        with pytest.raises(
            client.exceptions.ValidationException, match="The provided model identifier is invalid"
        ):
            await in_thread(
                lambda: client.converse(modelId="anthropic.nope-v1:0", messages=CONVERSE_MESSAGES)
            )
        async with aiohttp.ClientSession() as session:
            async with session.post(f"{url}/model/{MODEL}/count-tokens", data=b"{}") as resp:
                assert resp.status == 400
                assert resp.headers["x-amzn-ErrorType"] == "ValidationException" + wire.ERROR_TYPE_SUFFIX
                assert await resp.json() == {
                    "message": "The requested operation is not recognized by the service."
                }
            async with session.post(
                url + wire.model_path(MODEL, "invoke"), data=b'{"messages":[{"role":"user","content":"x"}]}'
            ) as resp:
                assert resp.status == 400
                assert "max_tokens" in (await resp.json())["message"]
    assert runtime.admitted == []
    assert [(r["api"], r["status"]) for r in rows(ledger)] == [
        ("bedrock.converse", 400),
        ("bedrock.unknown", 400),
        ("bedrock.invoke", 400),
    ]


@pytest.mark.parametrize(
    ("reason", "message"),
    [
        ("requests_per_min", "Too many requests, please wait before trying again."),
        ("tokens_per_min", "Too many tokens, please wait before trying again."),
    ],
)
async def test_throttling_is_boto3s_throttling_exception(reason: str, message: str) -> None:
    """A 429 rejection raises client.exceptions.ThrottlingException with Bedrock's message, no Retry-After."""
    ledger = Ledger()
    runtime = ScriptedRuntime(ledger, rejection=Rejection(429, reason))
    async with serve(runtime) as url:
        client = make_client(url)
        with pytest.raises(client.exceptions.ThrottlingException) as info:
            await in_thread(lambda: client.converse_stream(modelId=MODEL, messages=CONVERSE_MESSAGES))
    error = info.value.response
    assert error["Error"] == {"Code": "ThrottlingException", "Message": message}
    headers = error["ResponseMetadata"]["HTTPHeaders"]
    assert error["ResponseMetadata"]["HTTPStatusCode"] == 429
    assert (
        headers["x-amzn-errortype"]
        == "ThrottlingException:http://internal.amazon.com/coral/com.amazon.bedrock/"
    )
    assert "retry-after" not in headers
    # max_attempts counts retries, not attempts: boto3 retried the throttled call once
    assert error["ResponseMetadata"]["RetryAttempts"] == 1
    assert runtime.released == len(runtime.admitted) == 2
    assert [(r["status"], r["api"], r["tokens_out"]) for r in rows(ledger)] == [
        (429, "bedrock.converse_stream", 0)
    ] * 2


@pytest.mark.parametrize(
    ("rejection", "exception"),
    [
        (Rejection(503, "outage"), "ServiceUnavailableException"),
        (Rejection(500, "fault"), "InternalServerException"),
        (Rejection(502, "fault"), "InternalServerException"),
    ],
)
async def test_outage_and_injected_errors_raise_the_modeled_exceptions(
    rejection: Rejection, exception: str
) -> None:
    """An outage is ServiceUnavailableException, an injected 5xx InternalServerException; status kept."""
    ledger = Ledger()
    async with serve(ScriptedRuntime(ledger, rejection=rejection)) as url:
        client = make_client(url)
        with pytest.raises(getattr(client.exceptions, exception)) as info:
            await in_thread(lambda: client.invoke_model(modelId=MODEL, body=ANTHROPIC_BODY))
    assert info.value.response["ResponseMetadata"]["HTTPStatusCode"] == rejection.status
    assert {r["status"] for r in rows(ledger)} == {rejection.status}


async def test_a_frame_with_a_bad_crc_makes_boto3_raise() -> None:
    """malformed_at_chunk sends that frame with a corrupted CRC, and boto3 raises while iterating."""
    ledger = Ledger()
    async with serve(ScriptedRuntime(ledger, plan=FaultPlan(malformed_at_chunk=2))) as url:
        client = make_client(url)
        received: list[dict[str, Any]] = []

        def run() -> None:
            resp = client.converse_stream(
                modelId=MODEL, messages=CONVERSE_MESSAGES, inferenceConfig={"maxTokens": 3}
            )
            received.extend(resp["stream"])

        with pytest.raises(botocore.eventstream.ChecksumMismatch):
            await in_thread(run)
    assert [next(iter(e)) for e in received] == ["messageStart", "contentBlockDelta"]


async def test_our_parser_reads_live_streams_of_both_operations() -> None:
    """The sans-IO parsers read the mock's live bodies of all four operations; botocore agrees on frames."""
    ledger = Ledger()
    async with serve(ScriptedRuntime(ledger)) as url:
        converse = await post_raw(url, template(url, ARN, "converse-stream"), "c-1")
        invoke = await post_raw(url, template(url, ARN, "invoke-with-response-stream"), "i-1")
        plain = await post_raw(url, template(url, ARN, "converse"), "p-1")
        anthropic = await post_raw(url, template(url, ARN, "invoke"), "a-1")
    assert converse[1]["Content-Type"] == wire.EVENTSTREAM_CT
    assert invoke[1]["X-Amzn-Bedrock-Content-Type"] == "application/json"
    tail = [("finish", "max_tokens"), ("usage", 5, 4), ("done",)]
    assert wire.stream_events(converse[2]) == [("token", 1)] * 4 + tail
    events = wire.stream_events(invoke[2])
    assert events[0][0] == "id" and events[0][1].startswith("msg_bdrk_")
    assert events[1:] == [("token", 1)] * 4 + tail
    assert wire.parse_converse_response(b"".join(plain[2])) == wire.BedrockResult(
        " the of and to", 4, 5, 4, None, "max_tokens", None
    )
    result = wire.parse_invoke_response(b"".join(anthropic[2]))
    assert (result.text, result.usage_in, result.usage_out) == (" the of and to", 5, 4)
    # botocore decodes the same live bytes frame by frame
    buffer = es.EventStreamDecoder()
    ours = [m.event_type for m in buffer.feed(b"".join(invoke[2]))]
    theirs = botocore.eventstream.EventStreamBuffer()
    theirs.add_data(b"".join(invoke[2]))
    assert ours == [m.headers[":event-type"] for m in theirs] == ["chunk"] * 9
    assert [r["request_id"] for r in rows(ledger)] == ["c-1", "i-1", "p-1", "a-1"]


async def test_client_request_id_header_wins_over_invocation_id() -> None:
    """The ledger's request id is x-ms-client-request-id when sent, else amz-sdk-invocation-id."""
    ledger = Ledger()
    async with serve(ScriptedRuntime(ledger)) as url:
        t = template(url, MODEL, "converse")
        async with aiohttp.ClientSession() as session:
            headers = {**t.headers_for("inv-1"), "x-ms-client-request-id": "gw-1"}
            async with session.post(url + t.path, data=t.body, headers=headers) as resp:
                assert resp.status == 200
    assert rows(ledger)[0]["request_id"] == "gw-1"


async def test_disconnect_after_chunks_cuts_the_stream() -> None:
    """disconnect_after_chunks aborts after that many frames: the parser reports a reset, the ledger 200."""
    ledger = Ledger()
    async with serve(ScriptedRuntime(ledger, plan=FaultPlan(disconnect_after_chunks=3))) as url:
        status, _, reads = await post_raw(url, template(url, MODEL, "converse-stream"), "d-1")
        [row] = await wait_rows(ledger, 1)
    assert status == 200
    events = wire.stream_events(reads)
    assert events[:2] == [("token", 1), ("token", 1)]
    assert events[-1][0] == "error" and wire.error_kind(events[-1][1]) == "reset"
    assert (row["status"], row["tokens_out"]) == (200, 2)


async def test_reset_before_response_closes_the_connection() -> None:
    """reset_before_response drops the connection without a reply; boto3 raises, the ledger says not sent."""
    ledger = Ledger()
    runtime = ScriptedRuntime(ledger, plan=FaultPlan(reset_before_response=True))
    async with serve(runtime) as url:
        client = make_client(url)
        with pytest.raises(botocore.exceptions.BotoCoreError):
            await in_thread(lambda: client.converse(modelId=MODEL, messages=CONVERSE_MESSAGES))
        ledgered = await wait_rows(ledger, 2)  # boto3 retries a reset once with max_attempts=1
    assert [(r["status"], r["bytes_out"]) for r in ledgered] == [(LEDGER_STATUS_NOT_SENT, 0)] * 2
    assert runtime.released == 2


async def test_first_token_waits_for_first_byte_delay_and_ttft() -> None:
    """The first delta arrives no earlier than first-byte delay plus TTFT after the request (lower bound)."""
    slow = Latency(ttft_base_ms=60, prefill_us_per_token=0, itl_ms=1, jitter_frac=0)
    ledger = Ledger()
    async with serve(ScriptedRuntime(ledger, plan=FaultPlan(first_byte_delay_s=0.05), latency=slow)) as url:
        t = template(url, MODEL, "converse-stream", max_tokens=2)
        parser = wire.BedrockStreamParser()
        first_token_s = None
        async with aiohttp.ClientSession() as session:
            start = time.monotonic()
            async with session.post(url + t.path, data=t.body, headers=t.headers_for("slow")) as resp:
                async for data in resp.content.iter_any():
                    if parser.feed(data) and first_token_s is None:
                        first_token_s = time.monotonic() - start
    parser.close()
    assert parser.done and parser.error is None
    assert first_token_s is not None and first_token_s >= 0.105


async def test_bedrock_endpoint_in_a_fleet() -> None:
    """start_fleet serves a bedrock/aws endpoint that boto3 can call, with its ledger in the fleet's table."""
    fleet = Fleet(name="f", seed=1, endpoints=[endpoint()])
    running = await start_fleet(fleet)
    try:
        [info] = running.endpoints
        assert (info["dialect"], info["cloud"]) == ("bedrock", "aws")
        client = make_client(info["base_url"])
        resp = await in_thread(
            lambda: client.converse(modelId=ARN, messages=CONVERSE_MESSAGES, inferenceConfig={"maxTokens": 2})
        )
        assert resp["output"]["message"]["content"] == [{"text": " the of"}]
        chunks = await in_thread(
            lambda: [
                json.loads(ev["chunk"]["bytes"])["type"]
                for ev in client.invoke_model_with_response_stream(modelId=MODEL, body=ANTHROPIC_BODY)["body"]
            ]
        )
        assert chunks[-1] == "message_stop"
        table = running.ledger_table().to_pylist()
    finally:
        await running.stop()
    assert [(r["endpoint"], r["cloud"], r["region"], r["api"], r["deployment"]) for r in table] == [
        ("bedrock-use1", "aws", "us-east-1", "bedrock.converse", ARN),
        ("bedrock-use1", "aws", "us-east-1", "bedrock.invoke_stream", MODEL),
    ]


def test_chunk_frame_carries_base64_of_the_model_event() -> None:
    """A chunk frame's payload is {"bytes": base64(JSON)}, as botocore hands it to the user decoded."""
    [message] = es.decode_all(wire.chunk_frame({"type": "message_stop"}))
    assert message.event_type == "chunk"
    assert base64.b64decode(json.loads(message.payload)["bytes"]) == b'{"type":"message_stop"}'
