"""The Vertex AI (Gemini) dialect: the sans-IO client side, and the mock driven by google-genai
unchanged against real port-0 servers."""

from __future__ import annotations

import asyncio
import contextlib
import pickle
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import google.oauth2.credentials
import openai
import orjson
import pytest
from aiohttp import web
from google import genai
from google.genai import errors, types
from multidict import CIMultiDict

from harness.mocks import Ledger, RunningFleet, start_fleet
from harness.mocks.runtime import NO_FAULTS, Admission, EndpointRuntime, FaultPlan, Rejection
from harness.mocks.vertex import make_vertex_app, parse_tail
from harness.profile.models import Fleet, FleetEndpoint, Latency
from harness.protocols import vertex as wire
from harness.protocols.fingerprint import attribute
from harness.results.schema import LEDGER_SCHEMA

MODEL = "gemini-2.0-flash-001"
PROJECT = "my-proj"
LOCATION = "us-central1"
FAST = Latency(ttft_base_ms=5, prefill_us_per_token=0, itl_ms=1, jitter_frac=0)
GOOGLE_ENV = (
    "GOOGLE_CLOUD_PROJECT",
    "GOOGLE_CLOUD_LOCATION",
    "GOOGLE_API_KEY",
    "GEMINI_API_KEY",
    "GOOGLE_GENAI_USE_VERTEXAI",
    "GOOGLE_GENAI_API_VERSION",
)


@pytest.fixture(autouse=True)
def _no_google_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in GOOGLE_ENV:
        monkeypatch.delenv(name, raising=False)


def endpoint(latency: Latency = FAST) -> FleetEndpoint:
    return FleetEndpoint(
        name="vx", cloud="gcp", dialect="vertex", region=LOCATION, deployments=[MODEL], latency=latency
    )


class PlannedRuntime(EndpointRuntime):
    """A runtime whose admission is fixed by the test: one rejection or one fault plan for all."""

    def __init__(
        self,
        ep: FleetEndpoint,
        *,
        rejection: Rejection | None = None,
        plan: FaultPlan = NO_FAULTS,
    ) -> None:
        super().__init__(ep, Ledger(), 7)
        self._rejection = rejection
        self._plan = plan
        self.admitted: list[tuple[str, int]] = []
        self.released = 0

    async def admit(self, deployment: str, est_tokens: int) -> Admission:
        self.admitted.append((deployment, est_tokens))

        def release() -> None:
            self.released += 1

        return Admission(self._rejection, self._plan, release=release)


Seen = list[tuple[str, dict[str, str]]]


def _capture(seen: Seen) -> Callable[..., Awaitable[web.StreamResponse]]:
    @web.middleware
    async def capture(request: web.Request, handler: Any) -> web.StreamResponse:
        seen.append((request.path_qs, dict(request.headers)))
        return await handler(request)  # type: ignore[no-any-return]

    return capture


@contextlib.asynccontextmanager
async def serve(runtime: EndpointRuntime, seen: Seen | None = None) -> AsyncIterator[str]:
    app = make_vertex_app(runtime)
    if seen is not None:
        app.middlewares.append(_capture(seen))
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
    await runner.setup()
    try:
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()


def vertex_client(url: str, api_version: str | None = None, **options: Any) -> genai.Client:
    http = types.HttpOptions(base_url=url, api_version=api_version, **options)
    return genai.Client(
        vertexai=True,
        project=PROJECT,
        location=LOCATION,
        credentials=google.oauth2.credentials.Credentials(token="ya29.dummy"),
        http_options=http,
    )


def express_client(url: str) -> genai.Client:
    return genai.Client(vertexai=True, api_key="dummy-key", http_options=types.HttpOptions(base_url=url))


def rows(runtime: EndpointRuntime) -> list[dict[str, Any]]:
    return runtime.ledger.to_table().to_pylist()


async def post(
    url: str, path: str, body: bytes, headers: dict[str, str]
) -> tuple[int, dict[str, str], bytes]:
    async with (
        aiohttp.ClientSession() as session,
        session.post(url + path, data=body, headers=headers) as resp,
    ):
        return resp.status, dict(resp.headers), await resp.read()


def template(url: str, *, stream: bool, max_tokens: int = 4, **kwargs: Any) -> wire.GenerateRequestTemplate:
    return wire.GenerateRequestTemplate(
        url, MODEL, "ya29.dummy", prompt="say hi to the world", max_tokens=max_tokens, stream=stream, **kwargs
    )


# --------------------------------------------------------------------------- sans-IO client side


def test_template_url_forms_headers_and_body() -> None:
    """The template builds project/express URLs, v1/v1beta1, Bearer or API-key auth, and the body."""
    project = wire.GenerateRequestTemplate(
        "http://h:1/", MODEL, "tok", prompt="a b", max_tokens=9, stream=True, project="p", location="l"
    )
    assert (
        project.url
        == f"http://h:1/v1beta1/projects/p/locations/l/publishers/google/models/{MODEL}:streamGenerateContent?alt=sse"
    )
    assert project.api == "vertex.stream_generate_content"
    headers = project.headers_for("rid-1")
    assert headers["Authorization"] == "Bearer tok"
    assert headers["x-ms-client-request-id"] == "rid-1"
    assert "x-goog-api-key" not in headers
    assert orjson.loads(project.body) == {
        "contents": [{"role": "user", "parts": [{"text": "a b"}]}],
        "generationConfig": {"maxOutputTokens": 9},
    }
    express = wire.GenerateRequestTemplate(
        "http://h:1", MODEL, "s3cret", prompt="x", max_tokens=1, stream=False, api_version="v1",
        auth="api-key", server_timeout_s=30,
    )  # fmt: skip
    assert express.url == f"http://h:1/v1/publishers/google/models/{MODEL}:generateContent"
    assert express.headers_for("r") == {
        "x-goog-api-key": "s3cret", "Content-Type": "application/json", "X-Server-Timeout": "30",
        "x-ms-client-request-id": "r",
    }  # fmt: skip
    clone = pickle.loads(pickle.dumps(express))
    assert (clone.url, clone.body, clone.headers_for("r")) == (
        express.url,
        express.body,
        express.headers_for("r"),
    )
    assert "s3cret" not in repr(express)
    with pytest.raises(ValueError, match="together"):
        wire.GenerateRequestTemplate(
            "http://h", MODEL, None, prompt="x", max_tokens=1, stream=False, project="p"
        )
    with pytest.raises(ValueError, match="api_version"):
        wire.GenerateRequestTemplate(
            "http://h", MODEL, None, prompt="x", max_tokens=1, stream=False, api_version="v2"
        )


def test_stream_events_emit_done_only_at_a_clean_end_after_finish() -> None:
    """Events map to the shared vocabulary, and "done" comes from the end of the body after a finishReason."""
    enc = wire.StreamEncoder("rid", MODEL, "2026-01-01T00:00:00.000000Z")
    body = [wire.sse_event(enc.content(" hello world")), wire.sse_event(enc.last(" bye", "STOP", 3, 3))]
    assert wire.stream_events(body) == [
        ("id", "rid"), ("token", 2), ("token", 1), ("usage", 3, 3), ("finish", "STOP"), ("done",),
    ]  # fmt: skip
    assert wire.stream_events(body[:1]) == [("id", "rid"), ("token", 2), ("error", wire.TRUNCATED)]
    assert wire.stream_events(body[:1], require_done=False) == [("id", "rid"), ("token", 2), ("done",)]
    cut = b"".join(body)[:-3]
    assert wire.stream_events([cut])[-1] == ("error", wire.TRUNCATED_EVENT)
    parser = wire.VertexStreamParser()
    assert parser.feed(b"".join(body)) == 2
    assert not parser.ended  # no end marker: only the end of the body ends a Vertex stream
    parser.close()
    assert (parser.done, parser.usage_in, parser.usage_out, parser.finish_reason) == (True, 3, 3, "STOP")


def test_stream_errors_thoughts_and_function_calls() -> None:
    """Error events and bad JSON end the stream; thought parts are not content; function calls are."""
    enc = wire.StreamEncoder("rid", MODEL, "t")
    error = wire.error_event(504, "Deadline expired before operation could complete.")
    events = wire.stream_events([wire.sse_event(enc.content(" a")), error, wire.sse_event(enc.content(" b"))])
    assert events == [
        ("id", "rid"),
        ("token", 1),
        ("error", "DEADLINE_EXCEEDED: Deadline expired before operation could complete."),
    ]
    assert wire.error_kind(events[-1][1]) == "stream_error"
    bad = wire.stream_events([b'data: {"candidates":[{"content":\r\n\r\n'])
    assert bad[0][0] == "error"
    assert wire.error_kind(bad[0][1]) == "protocol"
    assert wire.error_kind(wire.TRUNCATED) == "reset"
    thought = {
        "candidates": [{"content": {"role": "model", "parts": [{"text": "hmm let me see", "thought": True}]}}]
    }
    call = {
        "candidates": [{"content": {"role": "model", "parts": [{"functionCall": {"name": "f", "args": {}}}]},
                        "finishReason": "STOP"}],
        "usageMetadata": {"promptTokenCount": 4, "candidatesTokenCount": 2, "thoughtsTokenCount": 3},
    }  # fmt: skip
    events = wire.stream_events([wire.sse_event(orjson.dumps(thought)), wire.sse_event(orjson.dumps(call))])
    assert events == [
        ("token", 1), ("usage", 4, 5), ("finish", "STOP"), ("done",),
    ]  # fmt: skip
    blocked = {"promptFeedback": {"blockReason": "SAFETY"}, "usageMetadata": {"promptTokenCount": 4}}
    assert wire.stream_events([wire.sse_event(orjson.dumps(blocked))]) == [
        ("usage", 4, 0), ("finish", "SAFETY"), ("done",),
    ]  # fmt: skip


def test_non_stream_and_error_bodies_parse() -> None:
    """A generateContent body gives text, usage, id and finish reason; errors give (status, message)."""
    body = wire.generate_content_body("rid", MODEL, "t", " one two three", 5, 3, "MAX_TOKENS")
    assert wire.parse_generate_response(body) == (" one two three", 3, 5, 3, "rid", "MAX_TOKENS", None)
    error = wire.error_body(429, "Resource exhausted.")
    assert orjson.loads(error) == {
        "error": {"code": 429, "message": "Resource exhausted.", "status": "RESOURCE_EXHAUSTED"}
    }
    assert wire.parse_error_body(error) == ("RESOURCE_EXHAUSTED", "Resource exhausted.")
    assert wire.parse_error_body(b"[" + error + b"]") == ("RESOURCE_EXHAUSTED", "Resource exhausted.")
    assert wire.parse_error_body(b"<html>oops</html>") == (None, "<html>oops</html>")
    assert wire.parse_generate_response(error).error == "RESOURCE_EXHAUSTED: Resource exhausted."
    assert wire.parse_generate_response(b"nope").error.startswith(wire.MALFORMED_PREFIX)
    assert (wire.rpc_status(503), wire.rpc_status(500), wire.rpc_status(418)) == (
        "UNAVAILABLE",
        "INTERNAL",
        "FAILED_PRECONDITION",
    )


def test_path_tail_parsing() -> None:
    """Project and express paths name model and method; anything else is not a Vertex model path."""
    assert parse_tail(f"projects/p/locations/l/publishers/google/models/{MODEL}:generateContent") == (
        f"projects/p/locations/l/publishers/google/models/{MODEL}", MODEL, "generateContent",
    )  # fmt: skip
    assert (
        parse_tail(f"publishers/google/models/{MODEL}:streamGenerateContent").method
        == "streamGenerateContent"
    )
    for tail in (
        f"publishers/google/models/{MODEL}",
        "models/m:generateContent",
        "projects/p/publishers/google/models/m:x",
    ):
        assert parse_tail(tail) is None


# --------------------------------------------------------------------------- google-genai, Vertex mode


async def test_sdk_project_mode_v1_generate_content() -> None:
    """google-genai on v1 with static credentials gets text, usage, response id and the GFE fingerprint."""
    runtime = PlannedRuntime(endpoint())
    seen: Seen = []
    async with serve(runtime, seen) as url:
        client = vertex_client(url, "v1")
        try:
            reply = await client.aio.models.generate_content(
                model=MODEL,
                contents="say hi to the world",
                config=types.GenerateContentConfig(max_output_tokens=3),
            )
        finally:
            await client.aio.aclose()
    assert reply.text == " the of and"
    usage = reply.usage_metadata
    assert (usage.prompt_token_count, usage.candidates_token_count, usage.total_token_count) == (5, 3, 8)
    assert usage.traffic_type == types.TrafficType.ON_DEMAND
    assert reply.candidates[0].finish_reason == types.FinishReason.MAX_TOKENS
    assert reply.model_version == MODEL
    path, headers = seen[0]
    assert (
        path
        == f"/v1/projects/{PROJECT}/locations/{LOCATION}/publishers/google/models/{MODEL}:generateContent"
    )
    assert headers["Authorization"] == "Bearer ya29.dummy"
    response_headers = CIMultiDict(reply.sdk_http_response.headers)
    assert response_headers["server"] == "scaffolding on HTTPServer2"
    assert response_headers["x-mock-cloud"] == "gcp"
    fp = attribute(response_headers)
    assert (fp.cloud, fp.mock_cloud, fp.mock_region) == ("gcp", "gcp", LOCATION)
    [row] = rows(runtime)
    assert row["response_id"] == reply.response_id
    assert (row["api"], row["status"], row["stream"], row["tokens_in"], row["tokens_out"]) == (
        "vertex.generate_content", 200, False, 5, 3,
    )  # fmt: skip
    assert runtime.admitted == [(MODEL, 8)]
    assert runtime.released == 1


async def test_sdk_default_v1beta1_stream() -> None:
    """The default version streams with alt=sse: a token per chunk, finish and usage on the last only."""
    runtime = PlannedRuntime(endpoint())
    seen: Seen = []
    async with serve(runtime, seen) as url:
        client = vertex_client(url)
        try:
            stream = await client.aio.models.generate_content_stream(
                model=MODEL, contents="hello", config=types.GenerateContentConfig(max_output_tokens=4)
            )
            chunks = [chunk async for chunk in stream]
        finally:
            await client.aio.aclose()
    assert seen[0][0].startswith(
        f"/v1beta1/projects/{PROJECT}/locations/{LOCATION}/publishers/google/models/"
    )
    assert seen[0][0].endswith(":streamGenerateContent?alt=sse")
    assert [c.text for c in chunks] == [" the", " of", " and", " to"]
    assert [c.candidates[0].finish_reason for c in chunks[:-1]] == [None] * 3
    assert chunks[-1].candidates[0].finish_reason == types.FinishReason.MAX_TOKENS
    assert chunks[0].usage_metadata.candidates_token_count is None
    assert chunks[-1].usage_metadata.candidates_token_count == 4
    assert len({c.response_id for c in chunks}) == 1
    assert CIMultiDict(chunks[0].sdk_http_response.headers)["content-type"] == "text/event-stream"
    [row] = rows(runtime)
    assert (row["api"], row["stream"], row["tokens_out"], row["response_id"]) == (
        "vertex.stream_generate_content", True, 4, chunks[0].response_id,
    )  # fmt: skip


async def test_sdk_express_mode_sync_client() -> None:
    """Express mode (API key, no project) posts to /v1beta1/publishers/... with x-goog-api-key."""
    runtime = PlannedRuntime(endpoint())
    seen: Seen = []
    async with serve(runtime, seen) as url:

        def call() -> tuple[types.GenerateContentResponse, list[str]]:
            with express_client(url) as client:
                reply = client.models.generate_content(model=MODEL, contents="hi")
                texts = [
                    c.text or "" for c in client.models.generate_content_stream(model=MODEL, contents="hi")
                ]
                return reply, texts

        reply, texts = await asyncio.to_thread(call)
    assert reply.text == "".join(texts)
    assert len(texts) == 16  # no maxOutputTokens: the mock's default reply length
    assert reply.candidates[0].finish_reason == types.FinishReason.STOP
    assert [path for path, _ in seen] == [
        f"/v1beta1/publishers/google/models/{MODEL}:generateContent",
        f"/v1beta1/publishers/google/models/{MODEL}:streamGenerateContent?alt=sse",
    ]
    assert seen[0][1]["x-goog-api-key"] == "dummy-key"
    assert "Authorization" not in seen[0][1]


async def test_sdk_429_is_resource_exhausted() -> None:
    """A 429 rejection reaches google-genai as ClientError 429 RESOURCE_EXHAUSTED, and is ledgered."""
    runtime = PlannedRuntime(endpoint(), rejection=Rejection(429, "requests_per_min"))
    async with serve(runtime) as url:
        client = vertex_client(url)
        try:
            with pytest.raises(errors.ClientError) as caught:
                await client.aio.models.generate_content(model=MODEL, contents="hi")
        finally:
            await client.aio.aclose()
    assert (caught.value.code, caught.value.status) == (429, "RESOURCE_EXHAUSTED")
    assert caught.value.message.startswith("Resource exhausted. Please try again later.")
    [row] = rows(runtime)
    assert (row["status"], row["tokens_out"], row["response_id"]) == (429, 0, None)
    assert runtime.released == 1


@pytest.mark.parametrize(("status", "rpc"), [(503, "UNAVAILABLE"), (500, "INTERNAL")])
async def test_sdk_outage_and_injected_errors(status: int, rpc: str) -> None:
    """An outage (503) and an injected server error (500) raise ServerError with Google's status strings."""
    runtime = PlannedRuntime(endpoint(), rejection=Rejection(status, "outage" if status == 503 else "fault"))
    async with serve(runtime) as url:
        client = vertex_client(url)
        try:
            with pytest.raises(errors.ServerError) as caught:
                await client.aio.models.generate_content(model=MODEL, contents="hi")
        finally:
            await client.aio.aclose()
    assert (caught.value.code, caught.value.status) == (status, rpc)


async def test_sdk_mid_stream_error_at_server_deadline() -> None:
    """A stream past X-Server-Timeout ends in an error event, and google-genai raises APIError."""
    runtime = PlannedRuntime(
        endpoint(Latency(ttft_base_ms=5, prefill_us_per_token=0, itl_ms=20, jitter_frac=0))
    )
    received: list[str] = []
    async with serve(runtime) as url:
        client = vertex_client(url, headers={"X-Server-Timeout": "1"})
        try:
            stream = await client.aio.models.generate_content_stream(
                model=MODEL, contents="hi", config=types.GenerateContentConfig(max_output_tokens=500)
            )
            with pytest.raises(errors.APIError) as caught:
                async for chunk in stream:
                    received.append(chunk.text or "")  # noqa: PERF401 - keep what arrived before the raise
        finally:
            await client.aio.aclose()
    assert (caught.value.code, caught.value.status) == (504, "DEADLINE_EXCEEDED")
    assert 0 < len(received) < 500
    [row] = rows(runtime)
    assert (row["status"], row["stream"], row["tokens_out"]) == (200, True, len(received))


async def test_sdk_unknown_model_and_missing_auth() -> None:
    """An unknown model is 404 NOT_FOUND; a request with neither Bearer nor API key is 401 UNAUTHENTICATED."""
    runtime = PlannedRuntime(endpoint())
    async with serve(runtime) as url:
        client = vertex_client(url)
        try:
            with pytest.raises(errors.ClientError) as caught:
                await client.aio.models.generate_content(model="gemini-nope", contents="hi")
        finally:
            await client.aio.aclose()
        path = f"/v1/publishers/google/models/{MODEL}:generateContent"
        status, _, body = await post(url, path, b'{"contents":[]}', {"Content-Type": "application/json"})
        unsupported, _, _ = await post(
            url, f"/v1/publishers/google/models/{MODEL}:countTokens", b"{}", {"x-goog-api-key": "k"}
        )
        bad_version, _, _ = await post(url, path.replace("/v1/", "/v2/"), b"{}", {"x-goog-api-key": "k"})
    assert (caught.value.code, caught.value.status) == (404, "NOT_FOUND")
    assert "gemini-nope" in caught.value.message
    assert status == 401
    assert orjson.loads(body)["error"]["status"] == "UNAUTHENTICATED"
    assert (unsupported, bad_version) == (404, 404)
    ledger = rows(runtime)
    assert [(r["deployment"], r["status"]) for r in ledger] == [
        ("gemini-nope", 404), (MODEL, 401), (MODEL, 404), (None, 404),
    ]  # fmt: skip
    assert [r["api"] for r in ledger][-2] == "vertex.unsupported"
    assert runtime.admitted == []  # refused before admission: nothing counted against limits


# --------------------------------------------------------------------------- engine side against the mock


async def test_template_and_parser_agree_with_the_mock_ledger() -> None:
    """A request built by the template is served, parsed chunk by chunk, and matches the ledger row."""
    runtime = PlannedRuntime(endpoint())
    async with serve(runtime) as url:
        req = template(url, stream=True, project=PROJECT, location=LOCATION, max_tokens=6)
        parser = wire.VertexStreamParser()
        async with (
            aiohttp.ClientSession() as session,
            session.post(req.url, data=req.body, headers=req.headers_for("crid-1")) as resp,
        ):
            assert resp.status == 200
            async for data in resp.content.iter_any():
                parser.feed(data)
        parser.close()
        plain = template(url, stream=False, api_version="v1", auth="api-key")
        status, headers, body = await post(
            url, plain.url.removeprefix(url), plain.body, plain.headers_for("crid-2")
        )
    assert (parser.done, parser.content_chunks, parser.usage_out, parser.finish_reason) == (
        True,
        6,
        6,
        "MAX_TOKENS",
    )
    result = wire.parse_generate_response(body)
    assert (status, result.usage_in, result.usage_out, result.error) == (200, 5, 4, None)
    assert headers["Content-Type"] == "application/json; charset=UTF-8"
    stream_row, plain_row = rows(runtime)
    assert (stream_row["request_id"], stream_row["response_id"]) == ("crid-1", parser.response_id)
    assert (stream_row["tokens_in"], stream_row["tokens_out"]) == (parser.usage_in, parser.usage_out)
    assert (plain_row["request_id"], plain_row["response_id"]) == ("crid-2", result.response_id)
    assert runtime.ledger.to_table().schema.equals(LEDGER_SCHEMA, check_metadata=True)


async def test_stream_without_alt_sse_is_a_json_array() -> None:
    """streamGenerateContent without alt=sse returns one JSON array of response fragments."""
    runtime = PlannedRuntime(endpoint())
    async with serve(runtime) as url:
        req = template(url, stream=True, project=PROJECT, location=LOCATION, max_tokens=3)
        status, headers, body = await post(
            url, req.url.removeprefix(url).removesuffix("?alt=sse"), req.body, req.headers_for("r")
        )
    docs = orjson.loads(body)
    assert status == 200
    assert headers["Content-Type"].startswith("application/json")
    assert [d["candidates"][0]["content"]["parts"][0]["text"] for d in docs] == [" the", " of", " and"]
    assert docs[-1]["candidates"][0]["finishReason"] == "MAX_TOKENS"
    assert docs[-1]["usageMetadata"]["candidatesTokenCount"] == 3


async def test_non_stream_past_server_deadline_is_504() -> None:
    """A non-stream reply not due within X-Server-Timeout gets 504 DEADLINE_EXCEEDED at the deadline."""
    runtime = PlannedRuntime(
        endpoint(Latency(ttft_base_ms=5, prefill_us_per_token=0, itl_ms=20, jitter_frac=0))
    )
    async with serve(runtime) as url:
        req = template(url, stream=False, max_tokens=500, server_timeout_s=1)
        started = time.monotonic()
        status, _, body = await post(url, req.url.removeprefix(url), req.body, req.headers_for("r"))
        elapsed = time.monotonic() - started
    assert status == 504
    assert wire.parse_error_body(body)[0] == "DEADLINE_EXCEEDED"
    assert 0.9 <= elapsed < 8  # the deadline (1 s), not the 10 s the reply would take
    assert rows(runtime)[0]["response_id"] is None


async def test_stream_faults_reset_disconnect_malformed_and_slow_first_byte() -> None:
    """Fault plans reset before a reply, cut a stream after k events, corrupt event k, delay first bytes."""

    async def stream_with(plan: FaultPlan) -> tuple[wire.VertexStreamParser, dict[str, Any], float]:
        runtime = PlannedRuntime(endpoint(), plan=plan)
        parser = wire.VertexStreamParser()
        async with serve(runtime) as url:
            req = template(url, stream=True, max_tokens=5)
            started = time.monotonic()
            try:
                async with (
                    aiohttp.ClientSession() as session,
                    session.post(req.url, data=req.body, headers=req.headers_for("r")) as resp,
                ):
                    async for data in resp.content.iter_any():
                        parser.feed(data)
            except (aiohttp.ServerDisconnectedError, aiohttp.ClientPayloadError):
                pass
            else:
                parser.close()
            elapsed = time.monotonic() - started
        assert runtime.released == 1
        [row] = rows(runtime)
        return parser, row, elapsed

    parser, row, _ = await stream_with(FaultPlan(reset_before_response=True))
    assert (parser.content_chunks, row["status"], row["bytes_out"]) == (0, 499, 0)
    parser, row, _ = await stream_with(FaultPlan(disconnect_after_chunks=2))
    assert (parser.content_chunks, parser.done, row["status"], row["tokens_out"]) == (2, False, 200, 2)
    parser, row, _ = await stream_with(FaultPlan(disconnect_after_chunks=50))
    assert (parser.content_chunks, parser.finish_reason) == (4, None)  # clamped: the finishing event is lost
    parser, _, _ = await stream_with(FaultPlan(malformed_at_chunk=1))
    assert parser.content_chunks == 1
    assert parser.error is not None and wire.error_kind(parser.error) == "protocol"
    parser, _, _ = await stream_with(FaultPlan(malformed_at_chunk=50))
    assert (parser.content_chunks, wire.error_kind(parser.error or "")) == (4, "protocol")
    parser, _, elapsed = await stream_with(FaultPlan(first_byte_delay_s=0.3))
    assert (parser.done, parser.content_chunks) == (True, 5)
    assert elapsed >= 0.3


async def test_non_stream_faults_cut_or_corrupt_the_body() -> None:
    """A non-stream body is one chunk: a disconnect sends half of it and aborts; a malformed one is half."""
    cut = PlannedRuntime(endpoint(), plan=FaultPlan(disconnect_after_chunks=0))
    async with serve(cut) as url:
        req = template(url, stream=False)
        with pytest.raises(aiohttp.ClientPayloadError):
            await post(url, req.url.removeprefix(url), req.body, req.headers_for("r"))
    bad = PlannedRuntime(endpoint(), plan=FaultPlan(malformed_at_chunk=0))
    async with serve(bad) as url:
        req = template(url, stream=False)
        status, _, body = await post(url, req.url.removeprefix(url), req.body, req.headers_for("r"))
    assert status == 200
    assert wire.error_kind(wire.parse_generate_response(body).error or "") == "protocol"
    assert [r["status"] for r in rows(cut) + rows(bad)] == [200, 200]


# --------------------------------------------------------------------------- OpenAI-compatible endpoint


async def test_openai_sdk_on_the_openai_compatible_endpoint() -> None:
    """The openai SDK gets OpenAI-shaped replies from /endpoints/openapi, with Google's headers only."""
    runtime = PlannedRuntime(endpoint())
    async with serve(runtime) as url:
        base = f"{url}/v1beta1/projects/{PROJECT}/locations/{LOCATION}/endpoints/openapi"
        client = openai.AsyncOpenAI(base_url=base, api_key="ya29.dummy", max_retries=0)
        try:
            raw = await client.chat.completions.with_raw_response.create(
                model=f"google/{MODEL}", messages=[{"role": "user", "content": "say hi"}], max_tokens=3
            )
            reply = raw.parse()
            stream = await client.chat.completions.create(
                model=f"google/{MODEL}",
                messages=[{"role": "user", "content": "say hi"}],
                stream=True,
                stream_options={"include_usage": True},
            )
            chunks = [chunk async for chunk in stream]
            with pytest.raises(openai.NotFoundError):
                await client.chat.completions.create(
                    model="google/gemini-nope", messages=[{"role": "user", "content": "x"}]
                )
        finally:
            await client.close()
    assert reply.choices[0].message.content == " the of and"
    assert (reply.choices[0].finish_reason, reply.usage.prompt_tokens, reply.usage.completion_tokens) == (
        "length",
        2,
        3,
    )
    assert reply.model == f"google/{MODEL}"
    assert raw.headers["server"] == "scaffolding on HTTPServer2"
    assert not [name for name in raw.headers if name.lower().startswith("openai-")]
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert len(text.split()) == 16
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 16
    ledger = rows(runtime)
    assert [(r["api"], r["deployment"], r["stream"], r["status"]) for r in ledger] == [
        ("chat.completions", MODEL, False, 200),
        ("chat.completions", MODEL, True, 200),
        ("chat.completions", "gemini-nope", False, 404),
    ]


# --------------------------------------------------------------------------- the fleet


async def test_fleet_serves_vertex_endpoint() -> None:
    """start_fleet serves a dialect "vertex" endpoint for cloud gcp that google-genai uses unchanged."""
    fleet = Fleet(name="gcp", seed=5, endpoints=[endpoint().model_copy(update={"name": "vertex-usc1"})])
    running: RunningFleet = await start_fleet(fleet)
    try:
        info = running.endpoints[0]
        assert (info["dialect"], info["cloud"]) == ("vertex", "gcp")
        client = vertex_client(str(info["base_url"]))
        try:
            reply = await client.aio.models.generate_content(
                model=MODEL,
                contents="hi",
                config=types.GenerateContentConfig(
                    max_output_tokens=2,
                    http_options=types.HttpOptions(headers={"x-ms-client-request-id": "fleet-1"}),
                ),
            )
        finally:
            await client.aio.aclose()
        [row] = running.ledger_table().to_pylist()
    finally:
        await running.stop()
    assert reply.text == " the of"
    assert attribute(CIMultiDict(reply.sdk_http_response.headers)).cloud == "gcp"
    assert (row["endpoint"], row["cloud"], row["region"], row["deployment"]) == (
        "vertex-usc1",
        "gcp",
        LOCATION,
        MODEL,
    )
    assert (row["request_id"], row["response_id"], row["stateful"]) == ("fleet-1", reply.response_id, False)
