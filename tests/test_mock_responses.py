"""Responses and Conversations on the mock Azure/OpenAI endpoints, driven by the official openai SDK
against real port-0 servers, and the sans-IO Responses protocol module on their bytes."""

from __future__ import annotations

import asyncio
import pickle
from collections.abc import AsyncIterator

import aiohttp
import openai
import orjson
import pytest
from openai import AsyncAzureOpenAI, AsyncOpenAI, AzureOpenAI

import harness.mocks.azure_openai as azure_mock
from harness.compliance.classify import request_class
from harness.mocks import RunningFleet, start_fleet
from harness.mocks.openai_stateful import is_stateful
from harness.profile.models import Faults, Fleet, FleetEndpoint, Latency, RateLimits
from harness.protocols import responses as wire
from harness.protocols.tokens import output_token

API_VERSION = "2025-04-01-preview"
N_OUT = 6
FAST = Latency(ttft_base_ms=5, prefill_us_per_token=0, itl_ms=1, jitter_frac=0, output_tokens=N_OUT)
REPLY = "".join(output_token(i) for i in range(N_OUT))
PROMPT = "say hi to the world"  # 5 tokens
HAS_OPENAI_MOCK = hasattr(azure_mock, "make_openai_app")
needs_openai_mock = pytest.mark.skipif(not HAS_OPENAI_MOCK, reason="the openai dialect mock is not there yet")


def endpoint(
    name: str, region: str, dialect: str = "azure_openai", cloud: str = "azure", **kw: object
) -> FleetEndpoint:
    return FleetEndpoint(
        name=name, cloud=cloud, dialect=dialect, region=region, deployments=["gpt-4o"], latency=FAST, **kw
    )


def azure_fleet() -> Fleet:
    return Fleet(name="t", seed=5, endpoints=[endpoint("az-a", "swedencentral"), endpoint("az-b", "eastus")])


@pytest.fixture
async def fleet() -> AsyncIterator[RunningFleet]:
    running = await start_fleet(azure_fleet())
    try:
        yield running
    finally:
        await running.stop()


def url(running: RunningFleet, index: int = 0) -> str:
    return str(running.endpoints[index]["base_url"])


def azure(running: RunningFleet, index: int = 0) -> AsyncAzureOpenAI:
    return AsyncAzureOpenAI(
        azure_endpoint=url(running, index), api_key="k", api_version=API_VERSION, max_retries=0
    )


def rows(running: RunningFleet) -> list[dict]:
    """Every endpoint's ledger rows, in the order the requests arrived."""
    return sorted(running.ledger_table().to_pylist(), key=lambda r: r["received_wall_ns"])


# --------------------------------------------------------------------------- SDK: Azure


async def test_azure_create_retrieve_input_items_delete(fleet: RunningFleet) -> None:
    """AzureOpenAI creates a response (output_text, usage), retrieves it, lists its input, deletes it."""
    async with azure(fleet) as client:
        created = await client.responses.create(model="gpt-4o", input=PROMPT)
        assert created.id.startswith("resp_") and created.status == "completed"
        assert created.output_text == REPLY
        assert (created.usage.input_tokens, created.usage.output_tokens) == (5, N_OUT)
        fetched = await client.responses.retrieve(created.id)
        assert (fetched.id, fetched.output_text) == (created.id, REPLY)
        items = await client.responses.input_items.list(created.id)
        assert [item.content[0].text for item in items.data] == [PROMPT]
        await client.responses.delete(created.id)
        with pytest.raises(openai.NotFoundError):
            await client.responses.retrieve(created.id)


async def test_sync_azure_client_on_the_classic_path(fleet: RunningFleet) -> None:
    """The synchronous AzureOpenAI client's responses.create reaches /openai/responses?api-version=."""

    def call() -> tuple[str, int]:
        with AzureOpenAI(azure_endpoint=url(fleet), api_key="k", api_version=API_VERSION, max_retries=0) as c:
            response = c.responses.create(model="gpt-4o", input=PROMPT)
            return response.output_text, response.usage.total_tokens

    assert await asyncio.to_thread(call) == (REPLY, 5 + N_OUT)


async def test_chain_of_three_turns_grows_input_tokens(fleet: RunningFleet) -> None:
    """A chained turn's input tokens are the previous turn's input + output + its own input."""
    async with azure(fleet) as client:
        first = await client.responses.create(model="gpt-4o", input=PROMPT)
        second = await client.responses.create(
            model="gpt-4o", input="and again", previous_response_id=first.id
        )
        third = await client.responses.create(
            model="gpt-4o", input="once more please", previous_response_id=second.id
        )
    assert second.previous_response_id == first.id
    inputs = [r.usage.input_tokens for r in (first, second, third)]
    assert inputs == [5, 5 + N_OUT + 2, 5 + N_OUT + 2 + N_OUT + 3]


async def test_stream_events_follow_the_named_sequence(fleet: RunningFleet) -> None:
    """responses.create(stream=True) yields §3.1's named events numbered 0..n-1, ending in completed."""
    async with azure(fleet) as client:
        stream = await client.responses.create(model="gpt-4o", input=PROMPT, stream=True)
        events = [event async for event in stream]
    types = [e.type for e in events]
    assert types == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
        *["response.output_text.delta"] * N_OUT,
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert [e.sequence_number for e in events] == list(range(len(events)))
    assert "".join(e.delta for e in events if e.type == "response.output_text.delta") == REPLY
    assert events[-1].response.usage.output_tokens == N_OUT


async def test_stream_helper_final_response_and_chaining(fleet: RunningFleet) -> None:
    """responses.stream(...).get_final_response() works, and a streamed stored response can be chained."""
    async with azure(fleet) as client:
        async with client.responses.stream(model="gpt-4o", input=PROMPT) as stream:
            final = await stream.get_final_response()
        follow = await client.responses.create(model="gpt-4o", input="next", previous_response_id=final.id)
    assert final.output_text == REPLY
    assert follow.usage.input_tokens == 5 + N_OUT + 1


async def test_unknown_previous_response_id_is_a_400(fleet: RunningFleet) -> None:
    """An unknown previous_response_id raises BadRequestError with code previous_response_not_found."""
    async with azure(fleet) as client:
        with pytest.raises(openai.BadRequestError) as info:
            await client.responses.create(model="gpt-4o", input="x", previous_response_id="resp_nope")
    assert info.value.code == "previous_response_not_found"
    assert info.value.param == "previous_response_id"
    assert info.value.body["message"] == "Previous response with id 'resp_nope' not found."


async def test_state_lives_on_the_endpoint_that_created_it(fleet: RunningFleet) -> None:
    """A follow-up or retrieve sent to another endpoint of the fleet does not find the response."""
    async with azure(fleet, 0) as here, azure(fleet, 1) as there:
        first = await here.responses.create(model="gpt-4o", input=PROMPT)
        with pytest.raises(openai.BadRequestError) as info:
            await there.responses.create(model="gpt-4o", input="x", previous_response_id=first.id)
        with pytest.raises(openai.NotFoundError):
            await there.responses.retrieve(first.id)
        again = await here.responses.create(model="gpt-4o", input="x", previous_response_id=first.id)
    assert info.value.code == "previous_response_not_found"
    assert again.status == "completed"
    served = [(r["endpoint"], r["status"]) for r in rows(fleet) if r["api"] == "responses"]
    assert served == [("az-a", 200), ("az-b", 400), ("az-b", 404), ("az-a", 200)]


async def test_store_false_is_stateless_and_not_kept(fleet: RunningFleet) -> None:
    """store=false responses cannot be retrieved or chained, and their ledger row is stateless."""
    async with azure(fleet) as client:
        response = await client.responses.create(model="gpt-4o", input=PROMPT, store=False)
        assert response.store is False
        with pytest.raises(openai.NotFoundError):
            await client.responses.retrieve(response.id)
        with pytest.raises(openai.BadRequestError):
            await client.responses.create(model="gpt-4o", input="x", previous_response_id=response.id)
    first = rows(fleet)[0]
    assert (first["api"], first["stateful"], first["response_id"]) == ("responses", False, response.id)


def test_stateful_rule_matches_the_compliance_classifier() -> None:
    """The mock's stateful flag agrees with harness.compliance.classify.request_class for every flag mix."""
    for store in (True, False):
        for prev in (None, "resp_1"):
            for conv in (None, "conv_1"):
                expected = request_class(
                    "responses", store=store, previous_response_id=prev, conversation=conv
                )
                assert is_stateful(store, prev, conv) == (expected == "stateful")


async def test_conversations_and_responses_in_a_conversation(fleet: RunningFleet) -> None:
    """Conversations are created, updated, listed, deleted; responses in one append items and grow context."""
    async with azure(fleet) as client:
        conv = await client.conversations.create(
            metadata={"topic": "t"}, items=[{"type": "message", "role": "user", "content": "hello there"}]
        )
        assert conv.id.startswith("conv_") and conv.metadata == {"topic": "t"}
        first = await client.responses.create(model="gpt-4o", input="in conv", conversation=conv.id)
        second = await client.responses.create(model="gpt-4o", input="more", conversation=conv.id)
        assert first.conversation.id == conv.id
        assert first.usage.input_tokens == 2 + 2
        assert second.usage.input_tokens == 2 + 2 + N_OUT + 1
        items = await client.conversations.items.list(conv.id, order="asc")
        texts = [item.content[0].text for item in items.data]
        assert texts == ["hello there", "in conv", REPLY, "more", REPLY]
        added = await client.conversations.items.create(
            conv.id, items=[{"type": "message", "role": "user", "content": "extra"}]
        )
        assert len(added.data) == 1
        fetched = await client.conversations.items.retrieve(added.data[0].id, conversation_id=conv.id)
        assert fetched.content[0].text == "extra"
        updated = await client.conversations.update(conv.id, metadata={"topic": "u"})
        assert updated.metadata == {"topic": "u"}
        deleted = await client.conversations.delete(conv.id)
        assert deleted.deleted is True
        with pytest.raises(openai.NotFoundError):
            await client.conversations.retrieve(conv.id)
        with pytest.raises(openai.NotFoundError):
            await client.responses.create(model="gpt-4o", input="x", conversation=conv.id)
    apis = {r["api"] for r in rows(fleet)}
    assert apis == {"responses", "conversations"}
    assert all(r["stateful"] for r in rows(fleet))


async def test_ledger_rows_carry_api_stateful_response_id_and_request_id(fleet: RunningFleet) -> None:
    """Each create is one ledger row: api, stateful by the rule, its resp_ id and the client request id."""
    async with azure(fleet) as client:
        first = await client.responses.create(
            model="gpt-4o", input=PROMPT, extra_headers={"x-ms-client-request-id": "rid-1"}
        )
        stream = await client.responses.create(
            model="gpt-4o",
            input=PROMPT,
            store=False,
            stream=True,
            extra_headers={"x-ms-client-request-id": "rid-2"},
        )
        async for _ in stream:
            pass
    got = [
        (r["request_id"], r["api"], r["stateful"], r["stream"], r["tokens_in"], r["tokens_out"])
        for r in rows(fleet)
    ]
    assert got == [
        ("rid-1", "responses", True, False, 5, N_OUT),
        ("rid-2", "responses", False, True, 5, N_OUT),
    ]
    assert rows(fleet)[0]["response_id"] == first.id
    assert rows(fleet)[1]["response_id"].startswith("resp_")


async def test_openai_client_on_the_azure_v1_path(fleet: RunningFleet) -> None:
    """OpenAI(base_url=.../openai/v1/) creates, streams and chains responses on an Azure endpoint."""
    async with AsyncOpenAI(base_url=url(fleet) + "/openai/v1/", api_key="k", max_retries=0) as client:
        first = await client.responses.create(model="gpt-4o", input=PROMPT)
        async with client.responses.stream(model="gpt-4o", input="next", previous_response_id=first.id) as s:
            final = await s.get_final_response()
    assert final.output_text == REPLY
    assert final.usage.input_tokens == 5 + N_OUT + 1


async def test_azure_request_errors_and_auth(fleet: RunningFleet) -> None:
    """The classic path needs api-version, every path a key; an unknown deployment is Azure's 404."""
    base = url(fleet)
    body = orjson.dumps({"model": "gpt-4o", "input": "x"})
    async with aiohttp.ClientSession() as session:
        async with session.post(f"{base}/openai/responses", data=body, headers={"api-key": "k"}) as r:
            assert r.status == 400
            assert (await r.json())["error"]["code"] == "MissingApiVersionParameter"
        async with session.post(f"{base}/openai/v1/responses", data=body) as r:
            assert r.status == 401
            assert (await r.json())["error"]["code"] == "401"
        bad = orjson.dumps({"model": "nope", "input": "x"})
        async with session.post(f"{base}/openai/v1/responses", data=bad, headers={"api-key": "k"}) as r:
            assert r.status == 404
            assert (await r.json())["error"]["code"] == "DeploymentNotFound"
            assert r.headers["x-mock-cloud"] == "azure"
    assert [r["status"] for r in rows(fleet)] == [400, 401, 404]


async def test_azure_rate_limit_is_a_429_with_retry_headers() -> None:
    """A deployment over its requests-per-minute limit answers Azure's 429 body with retry-after headers."""
    fleet = Fleet(
        name="t",
        seed=1,
        endpoints=[endpoint("az", "swedencentral", rate_limits=RateLimits(requests_per_min=1))],
    )
    running = await start_fleet(fleet)
    try:
        async with azure(running) as client:
            await client.responses.create(model="gpt-4o", input=PROMPT)
            with pytest.raises(openai.RateLimitError) as info:
                await client.responses.create(model="gpt-4o", input=PROMPT)
        headers = info.value.response.headers
        assert info.value.body["code"] == "429"
        assert int(headers["retry-after"]) >= 1 and int(headers["retry-after-ms"]) > 0
        assert [r["status"] for r in rows(running)] == [200, 429]
    finally:
        await running.stop()


# --------------------------------------------------------------------------- SDK: OpenAI flavour


@needs_openai_mock
async def test_openai_flavor_create_stream_chain_and_errors() -> None:
    """OpenAI(base_url=.../v1) works on an openai endpoint, with OpenAI-shaped errors and 429s."""
    fleet = Fleet(
        name="t",
        seed=2,
        endpoints=[
            endpoint("oa", "us", dialect="openai", cloud="openai", rate_limits=RateLimits(requests_per_min=2))
        ],
    )
    running = await start_fleet(fleet)
    try:
        async with AsyncOpenAI(base_url=url(running) + "/v1", api_key="k", max_retries=0) as client:
            first = await client.responses.create(model="gpt-4o", input=PROMPT)
            async with client.responses.stream(
                model="gpt-4o", input="next", previous_response_id=first.id
            ) as s:
                final = await s.get_final_response()
            with pytest.raises(openai.BadRequestError) as bad:
                await client.responses.create(model="gpt-4o", input="x", previous_response_id="resp_nope")
            with pytest.raises(openai.RateLimitError) as limited:
                await client.responses.create(model="gpt-4o", input=PROMPT)
        assert first.output_text == REPLY
        assert final.usage.input_tokens == 5 + N_OUT + 1
        assert bad.value.code == "previous_response_not_found"
        assert limited.value.code == "rate_limit_exceeded"
        assert limited.value.response.headers["openai-version"] == "2020-10-01"
        assert [r["cloud"] for r in rows(running)] == ["openai"] * 4
    finally:
        await running.stop()


# --------------------------------------------------------------------------- sans-IO module on mock bytes


async def test_template_and_stream_parser_against_the_mock(fleet: RunningFleet) -> None:
    """The template's requests are accepted; the parser counts every delta and reads id, usage and the end."""
    template = wire.ResponsesRequestTemplate(
        url(fleet), "gpt-4o", "k", url_form="azure", api_version=API_VERSION, prompt=PROMPT, stream=True
    )
    async with aiohttp.ClientSession() as session:
        parser = wire.ResponsesStreamParser()
        async with session.post(template.url, data=template.body, headers=template.headers_for("r-1")) as r:
            assert r.status == 200
            counts = [parser.feed(chunk) async for chunk in r.content.iter_any()]
        parser.close()
        chained = template.body_for(previous_response_id=parser.response_id, input="go on")
        async with session.post(template.url, data=chained, headers=template.headers_for("r-2")) as r:
            second = wire.stream_events([await r.read()])
    assert (parser.done, parser.error, parser.finish_reason) == (True, None, "stop")
    assert sum(counts) == parser.content_chunks == N_OUT
    assert (parser.usage_in, parser.usage_out, parser.tokens_out_approx) == (5, N_OUT, N_OUT)
    assert second[-3:] == [("finish", "stop"), ("usage", 5 + N_OUT + 2, N_OUT), ("done",)]
    assert [r["request_id"] for r in rows(fleet)] == ["r-1", "r-2"]


async def test_midstream_disconnect_fault_cuts_both_reply_kinds() -> None:
    """A disconnect fault cuts a non-stream body short and leaves a stream without response.completed."""
    fleet = Fleet(
        name="t",
        seed=9,
        endpoints=[endpoint("az", "swedencentral", faults=Faults(midstream_disconnect_rate=1.0))],
    )
    running = await start_fleet(fleet)
    plain = wire.ResponsesRequestTemplate(url(running), "gpt-4o", "k", url_form="azure_v1", prompt=PROMPT)
    streaming = wire.ResponsesRequestTemplate(
        url(running), "gpt-4o", "k", url_form="azure_v1", prompt=PROMPT, stream=True
    )
    try:
        async with aiohttp.ClientSession() as session:
            async with session.post(plain.url, data=plain.body, headers=plain.headers_for("a")) as r:
                with pytest.raises(aiohttp.ClientPayloadError):
                    await r.read()
            parser = wire.ResponsesStreamParser()
            async with session.post(
                streaming.url, data=streaming.body, headers=streaming.headers_for("b")
            ) as r:
                try:
                    async for chunk in r.content.iter_any():
                        parser.feed(chunk)
                except aiohttp.ClientPayloadError:
                    pass
            parser.close()
        assert parser.error == wire.TRUNCATED and wire.error_kind(parser.error) == "reset"
        assert parser.content_chunks < N_OUT
        for _ in range(200):  # the server writes the row when it notices the abort
            if len(running.ledgers[0]) == 2:
                break
            await asyncio.sleep(0.01)
        got = [(r["request_id"], r["status"], r["tokens_out"]) for r in rows(running)]
        assert got == [("a", 200, 0), ("b", 200, parser.content_chunks)]
    finally:
        await running.stop()


# --------------------------------------------------------------------------- sans-IO units


def test_template_url_forms_headers_and_pickling() -> None:
    """The three URL forms, their auth and request-id headers, chained bodies, pickling by configuration."""
    azure_t = wire.ResponsesRequestTemplate(
        "http://h/", "d", "k", url_form="azure", api_version="v", prompt="p"
    )
    v1 = wire.ResponsesRequestTemplate("http://h", "d", "k", url_form="azure_v1", prompt="p", store=False)
    oa = wire.ResponsesRequestTemplate("http://h", "m", "k", url_form="openai", prompt="p", stream=True)
    assert (azure_t.url, v1.url, oa.url) == (
        "http://h/openai/responses?api-version=v",
        "http://h/openai/v1/responses",
        "http://h/v1/responses",
    )
    assert (
        azure_t.headers_for("x")["api-key"] == "k"
        and azure_t.headers_for("x")["x-ms-client-request-id"] == "x"
    )
    assert (
        oa.headers_for("x")["Authorization"] == "Bearer k"
        and oa.headers_for("x")["X-Client-Request-Id"] == "x"
    )
    assert orjson.loads(v1.body) == {"model": "d", "input": "p", "store": False}
    assert orjson.loads(oa.body_for(conversation="conv_1")) == {
        "model": "m",
        "input": "p",
        "store": True,
        "stream": True,
        "conversation": "conv_1",
    }
    assert (
        orjson.loads(azure_t.body_for(previous_response_id="resp_1", input="q"))["previous_response_id"]
        == "resp_1"
    )
    assert (
        azure_t.url_of("resp_1", "/input_items")
        == "http://h/openai/responses/resp_1/input_items?api-version=v"
    )
    clone = pickle.loads(pickle.dumps(azure_t))
    assert (clone.url, clone.body, clone.headers_for("y")) == (
        azure_t.url,
        azure_t.body,
        azure_t.headers_for("y"),
    )
    assert "sekrit" not in repr(
        wire.ResponsesRequestTemplate("http://h", "d", "sekrit", prompt="p", api_version="v")
    )
    with pytest.raises(ValueError, match="api_version"):
        wire.ResponsesRequestTemplate("http://h", "d", "k", url_form="azure", prompt="p")
    with pytest.raises(ValueError, match="mutually exclusive"):
        oa.body_for(previous_response_id="r", conversation="c")


def _sse(kind: str, data: dict) -> bytes:
    return b"event: " + kind.encode() + b"\ndata: " + orjson.dumps({"type": kind, **data}) + b"\n\n"


def test_stream_parser_failures_and_incomplete() -> None:
    """Failed responses, error events, malformed data, cut streams are errors; incomplete ends as length."""
    created = _sse("response.created", {"response": {"id": "resp_1", "status": "in_progress"}})
    failed = _sse("response.failed", {"response": {"status": "failed", "error": {"message": "boom"}}})
    assert wire.stream_events([created, failed]) == [("id", "resp_1"), ("error", "boom")]
    error = _sse("error", {"code": "server_error", "message": "bad", "param": None})
    assert wire.stream_events([error]) == [("error", "bad")]
    malformed = b"event: response.output_text.delta\ndata: {oops\n\n"
    events = wire.stream_events([created, malformed])
    assert events[-1][0] == "error" and wire.error_kind(events[-1][1]) == "protocol"
    delta = _sse("response.output_text.delta", {"delta": " two words"})
    assert wire.stream_events([created, delta]) == [("id", "resp_1"), ("token", 2), ("error", wire.TRUNCATED)]
    incomplete = _sse(
        "response.incomplete",
        {
            "response": {
                "status": "incomplete",
                "incomplete_details": {"reason": "max_output_tokens"},
                "usage": {"input_tokens": 3, "output_tokens": 2},
            }
        },
    )
    assert wire.stream_events([created, delta, incomplete]) == [
        ("id", "resp_1"),
        ("token", 2),
        ("finish", "length"),
        ("usage", 3, 2),
        ("done",),
    ]


def test_parse_response_errors() -> None:
    """An error body, a failed response and bytes that are not JSON each give an error."""
    error = wire.parse_response(wire.previous_response_not_found("resp_x"))
    assert error.error == "previous_response_not_found: Previous response with id 'resp_x' not found."
    failed = wire.parse_response(
        orjson.dumps({"id": "r", "status": "failed", "output": [], "error": {"message": "m"}})
    )
    assert (failed.response_id, failed.error) == ("r", "m")
    assert wire.parse_response(b"<html>").error.startswith("malformed ")
