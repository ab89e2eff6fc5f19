"""The mock OpenAI-direct endpoint, driven by the official openai SDK on a real port-0 server, and the
sans-IO OpenAI flavour of the chat, completions and embeddings wire formats."""

from __future__ import annotations

import asyncio
import pickle
import time
from collections.abc import AsyncIterator

import aiohttp
import openai
import orjson
import pytest
from openai import AsyncOpenAI, OpenAI

from harness.mocks import RunningFleet, start_fleet
from harness.mocks.azure_openai import make_azure_app, make_openai_app
from harness.mocks.runtime import FaultPlan, Rejection
from harness.profile.models import Fleet
from harness.protocols.azure_openai import (
    EV_DONE,
    EV_FINISH,
    EV_ID,
    EV_TOKEN,
    EV_USAGE,
    SSE_DONE,
    ChatRequestTemplate,
    ChatStreamParser,
    CompletionChunkEncoder,
    CompletionRequestTemplate,
    CompletionStreamParser,
    EmbeddingRequestTemplate,
    completion_stream_events,
    embedding_vector,
    parse_completion_response,
    parse_embeddings_response,
    parse_error_body,
    stream_events,
)
from harness.protocols.fingerprint import attribute
from harness.protocols.openai_flavor import go_duration, request_url
from tests.test_mock_azure import (
    MESSAGES,
    ScriptedRuntime,
    endpoint_config,
    rows_of,
    serve_app,
    wait_for_ledger,
)


@pytest.fixture
async def openai_fleet() -> AsyncIterator[RunningFleet]:
    """One OpenAI-dialect endpoint hosted by OpenAI, started through the fleet registry."""
    fleet = Fleet(
        name="t", seed=5, endpoints=[endpoint_config(cloud="openai", dialect="openai", region="us")]
    )
    running = await start_fleet(fleet)
    try:
        yield running
    finally:
        await running.stop()


def v1(running: RunningFleet) -> str:
    return str(running.endpoints[0]["base_url"]) + "/v1"


def ledger(running: RunningFleet) -> list[dict]:
    return running.ledger_table().to_pylist()


# --------------------------------------------------------------------------- SDK, sync


async def test_chat_non_stream_has_openai_body_and_fingerprint(openai_fleet: RunningFleet) -> None:
    """OpenAI chat replies carry no filter fields, OpenAI's headers, and echo X-Client-Request-Id."""

    def call() -> openai._legacy_response.LegacyAPIResponse:
        with OpenAI(base_url=v1(openai_fleet), api_key="sk-test", max_retries=0) as client:
            return client.chat.completions.with_raw_response.create(
                model="gpt-4o", messages=MESSAGES, max_tokens=3, extra_headers={"X-Client-Request-Id": "oa-1"}
            )

    raw = await asyncio.to_thread(call)
    completion = raw.parse()
    assert completion.choices[0].message.content == " the of and"
    assert completion.usage is not None
    assert (completion.usage.prompt_tokens, completion.usage.completion_tokens) == (7, 3)
    assert completion.usage.prompt_tokens_details is not None
    assert not (completion.model_extra or {}).get("prompt_filter_results")
    assert not (completion.choices[0].model_extra or {}).get("content_filter_results")
    assert completion.service_tier == "default"
    assert raw.headers["openai-version"] == "2020-10-01"
    assert raw.headers["x-request-id"].startswith("req_")
    assert raw.headers["x-client-request-id"] == "oa-1"
    assert raw.headers["x-mock-cloud"] == "openai"
    assert "apim-request-id" not in raw.headers
    assert attribute(raw.headers).cloud == "openai"
    rows = ledger(openai_fleet)
    assert [(r["request_id"], r["api"], r["cloud"], r["status"], r["response_id"]) for r in rows] == [
        ("oa-1", "chat.completions", "openai", 200, completion.id)
    ]


async def test_chat_stream_starts_with_the_reply_not_a_filter_chunk(openai_fleet: RunningFleet) -> None:
    """An OpenAI chat stream's first chunk is the role chunk; a usage chunk comes only when asked."""

    def call() -> list:
        with OpenAI(base_url=v1(openai_fleet), api_key="sk-test", max_retries=0) as client:
            return list(
                client.chat.completions.create(
                    model="gpt-4o-mini",
                    messages=MESSAGES,
                    max_tokens=4,
                    stream=True,
                    stream_options={"include_usage": True},
                )
            )

    chunks = await asyncio.to_thread(call)
    assert chunks[0].choices[0].delta.role == "assistant"
    assert all(c.id == chunks[0].id for c in chunks)
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == " the of and to"
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == [
        "length"
    ]
    assert chunks[-1].choices == []
    assert chunks[-1].usage is not None
    assert (chunks[-1].usage.prompt_tokens, chunks[-1].usage.completion_tokens) == (7, 4)
    assert all(not (c.model_extra or {}).get("prompt_filter_results") for c in chunks)


async def test_completions_non_stream_and_stream(openai_fleet: RunningFleet) -> None:
    """Legacy completions return text_completion objects, streamed or not, without Azure's fields."""

    def call() -> tuple:
        with OpenAI(base_url=v1(openai_fleet), api_key="sk-test", max_retries=0) as client:
            completion = client.completions.create(model="gpt-4o", prompt="the of and", max_tokens=2)
            chunks = list(client.completions.create(model="gpt-4o", prompt="the", max_tokens=3, stream=True))
            return completion, chunks

    completion, chunks = await asyncio.to_thread(call)
    assert (completion.object, completion.choices[0].text) == ("text_completion", " the of")
    assert completion.usage is not None
    assert (completion.usage.prompt_tokens, completion.usage.completion_tokens) == (3, 2)
    assert not (completion.model_extra or {}).get("prompt_filter_results")
    assert [c.choices[0].text for c in chunks] == [" the", " of", " and", ""]
    assert chunks[-1].choices[0].finish_reason == "length"
    assert all(c.usage is None for c in chunks)
    rows = ledger(openai_fleet)
    assert [(r["api"], r["stream"], r["tokens_out"]) for r in rows] == [
        ("completions", False, 2),
        ("completions", True, 3),
    ]


async def test_embeddings_float_and_base64_default(openai_fleet: RunningFleet) -> None:
    """The SDK's default (base64) and explicit float replies both give the mock's vector for the text."""

    def call() -> tuple:
        with OpenAI(base_url=v1(openai_fleet), api_key="sk-test", max_retries=0) as client:
            default = client.embeddings.create(model="emb", input="the of and")
            floats = client.embeddings.create(
                model="emb", input=["the of and", "to"], encoding_format="float"
            )
            tokens = client.embeddings.create(model="emb", input=[[1, 2, 3]], dimensions=16)
            return default, floats, tokens

    default, floats, tokens = await asyncio.to_thread(call)
    expected = embedding_vector("the of and").tolist()
    assert default.data[0].embedding == expected
    assert floats.data[0].embedding == expected
    assert floats.data[1].embedding == embedding_vector("to").tolist()
    assert default.data[0].embedding != floats.data[1].embedding
    assert (default.usage.prompt_tokens, floats.usage.prompt_tokens, tokens.usage.prompt_tokens) == (3, 4, 3)
    assert len(tokens.data[0].embedding) == 16
    assert [r["tokens_in"] for r in ledger(openai_fleet)] == [3, 4, 3]


# --------------------------------------------------------------------------- SDK, async


async def test_async_client_chat_completions_and_embeddings(openai_fleet: RunningFleet) -> None:
    """AsyncOpenAI gets the same replies for chat (both modes), completions and embeddings."""
    async with AsyncOpenAI(base_url=v1(openai_fleet), api_key="sk-test", max_retries=0) as client:
        chat = await client.chat.completions.create(model="gpt-4o", messages=MESSAGES, max_tokens=2)
        assert chat.choices[0].message.content == " the of"
        stream = await client.chat.completions.create(
            model="gpt-4o", messages=MESSAGES, max_tokens=2, stream=True
        )
        assert [
            c.choices[0].delta.content async for c in stream if c.choices and c.choices[0].delta.content
        ] == [
            " the",
            " of",
        ]
        completion = await client.completions.create(model="gpt-4o-mini", prompt="x", max_tokens=1)
        assert completion.choices[0].text == " the"
        embeddings = await client.embeddings.create(model="emb", input=["a", "b"])
        assert [d.embedding for d in embeddings.data] == [embedding_vector(t).tolist() for t in ("a", "b")]
    assert [r["api"] for r in ledger(openai_fleet)] == [
        "chat.completions",
        "chat.completions",
        "completions",
        "embeddings",
    ]


# --------------------------------------------------------------------------- errors


async def test_missing_bearer_key_is_a_401_in_openai_shape(openai_fleet: RunningFleet) -> None:
    """No Authorization header (or only Azure's api-key) gets OpenAI's invalid_api_key 401."""
    url = v1(openai_fleet) + "/chat/completions"
    body = orjson.dumps({"model": "gpt-4o", "messages": MESSAGES})
    async with aiohttp.ClientSession() as session:
        for headers in ({}, {"api-key": "k"}, {"Authorization": "Bearer "}):
            async with session.post(url, data=body, headers=headers) as resp:
                assert resp.status == 401
                error = orjson.loads(await resp.read())["error"]
                assert error["message"].startswith("Incorrect API key provided")
                assert (error["type"], error["param"], error["code"]) == (
                    "invalid_request_error",
                    None,
                    "invalid_api_key",
                )
                assert resp.headers["openai-version"] == "2020-10-01"
    assert [r["status"] for r in ledger(openai_fleet)] == [401, 401, 401]


async def test_unknown_model_is_model_not_found(openai_fleet: RunningFleet) -> None:
    """A model the endpoint does not serve raises NotFoundError with OpenAI's model_not_found code."""
    async with AsyncOpenAI(base_url=v1(openai_fleet), api_key="sk-test", max_retries=0) as client:
        with pytest.raises(openai.NotFoundError) as info:
            await client.chat.completions.create(model="gpt-9", messages=MESSAGES)
        with pytest.raises(openai.BadRequestError) as bad:
            await client.completions.create(model="gpt-4o", prompt=[{"not": "a prompt"}])  # type: ignore[list-item]
    assert info.value.code == "model_not_found"
    assert info.value.type == "invalid_request_error"
    assert bad.value.param == "prompt"
    assert [(r["deployment"], r["status"]) for r in ledger(openai_fleet)] == [("gpt-9", 404), ("gpt-4o", 400)]


async def test_openai_429_shape_and_sdk_retry() -> None:
    """OpenAI's 429 names the limit (type tokens, code rate_limit_exceeded); the SDK honours its retry."""
    reject = Rejection(429, "tokens_per_min", retry_after_s=0.05)
    runtime = ScriptedRuntime(
        endpoint_config(cloud="openai", dialect="openai", region="us"), [reject, reject, reject]
    )
    async with serve_app(make_openai_app(runtime)) as url:
        async with aiohttp.ClientSession() as session:
            body = orjson.dumps({"model": "gpt-4o", "messages": MESSAGES})
            async with session.post(
                url + "/v1/chat/completions", data=body, headers={"Authorization": "Bearer k"}
            ) as resp:
                assert resp.status == 429
                assert (resp.headers["retry-after"], resp.headers["retry-after-ms"]) == ("1", "50")
                error = orjson.loads(await resp.read())["error"]
        async with AsyncOpenAI(base_url=url + "/v1", api_key="k", max_retries=2) as client:
            t0 = time.perf_counter()
            chat = await client.chat.completions.create(model="gpt-4o", messages=MESSAGES, max_tokens=1)
            elapsed = time.perf_counter() - t0
    assert (error["type"], error["param"], error["code"]) == ("tokens", None, "rate_limit_exceeded")
    assert error["message"].startswith(
        "Rate limit reached for gpt-4o in organization org-mock on tokens per min"
    )
    assert "Please try again in 50ms." in error["message"]
    assert chat.choices[0].message.content == " the"
    assert elapsed >= 0.1
    assert [r["status"] for r in rows_of(runtime)] == [429, 429, 429, 200]


async def test_openai_outage_and_reset() -> None:
    """An outage is a 503 server_error; a reset fault makes the SDK raise APIConnectionError."""
    script: list[Rejection | FaultPlan] = [Rejection(503, "outage"), FaultPlan(reset_before_response=True)]
    runtime = ScriptedRuntime(endpoint_config(cloud="openai", dialect="openai", region="us"), script)
    async with (
        serve_app(make_openai_app(runtime)) as url,
        AsyncOpenAI(base_url=url + "/v1", api_key="k", max_retries=0) as client,
    ):
        with pytest.raises(openai.InternalServerError) as info:
            await client.embeddings.create(model="emb", input="x")
        with pytest.raises(openai.APIConnectionError):
            await client.embeddings.create(model="emb", input="x")
        rows = await wait_for_ledger(runtime, 2)
    assert info.value.status_code == 503
    assert info.value.type == "server_error"
    assert [(r["api"], r["status"]) for r in rows] == [("embeddings", 503), ("embeddings", 499)]


async def test_openai_front_door_hosted_on_azure_sends_azure_headers() -> None:
    """Headers follow the hosting cloud: an OpenAI-dialect endpoint on Azure sends Azure's headers."""
    runtime = ScriptedRuntime(endpoint_config(cloud="azure", dialect="openai", region="eastus"))
    async with (
        serve_app(make_openai_app(runtime)) as url,
        AsyncOpenAI(base_url=url + "/v1", api_key="k", max_retries=0) as client,
    ):
        raw = await client.chat.completions.with_raw_response.create(
            model="gpt-4o", messages=MESSAGES, max_tokens=1
        )
        completion = raw.parse()
    assert raw.headers["x-ms-region"] == "East US"
    assert raw.headers["x-mock-cloud"] == "azure"
    assert "openai-version" not in raw.headers
    assert not (completion.model_extra or {}).get("prompt_filter_results")
    assert attribute(raw.headers).cloud == "azure"
    assert rows_of(runtime)[0]["cloud"] == "azure"


# --------------------------------------------------------------------------- sans-IO: templates and parsers


def test_openai_chat_template_url_auth_and_pickle() -> None:
    """The OpenAI flavour posts to {base}/v1/chat/completions with a Bearer key and X-Client-Request-Id."""
    template = ChatRequestTemplate(
        "https://api.openai.com/",
        "gpt-4o",
        None,
        "sk-SECRET",
        model="gpt-4o",
        prompt="hi",
        max_tokens=3,
        stream=True,
        include_usage=True,
        flavor="openai",
    )
    assert template.url == "https://api.openai.com/v1/chat/completions"
    assert template.auth == "bearer"
    headers = template.headers_for("r-1")
    assert headers["Authorization"] == "Bearer sk-SECRET"
    assert headers["X-Client-Request-Id"] == "r-1"
    assert "api-key" not in headers
    assert "x-ms-client-request-id" not in headers
    assert orjson.loads(template.body)["stream_options"] == {"include_usage": True}
    clone = pickle.loads(pickle.dumps(template))
    assert (clone.url, clone.body, clone.headers_for("r")) == (
        template.url,
        template.body,
        template.headers_for("r"),
    )
    assert "SECRET" not in repr(template)
    with pytest.raises(ValueError, match="Bearer"):
        ChatRequestTemplate(
            "http://x",
            "m",
            None,
            "k",
            model="m",
            prompt="p",
            max_tokens=1,
            stream=False,
            include_usage=False,
            auth="api-key",
            flavor="openai",
        )
    with pytest.raises(ValueError, match="flavor"):
        ChatRequestTemplate(
            "http://x",
            "m",
            None,
            "k",
            model="m",
            prompt="p",
            max_tokens=1,
            stream=False,
            include_usage=False,
            flavor="bedrock",  # type: ignore[arg-type]
        )


def test_request_urls_for_every_flavour_and_operation() -> None:
    """Azure classic quotes deployment and api-version; Azure without api-version uses the v1 API."""
    assert request_url("azure", "https://r.openai.azure.com", "my dep", "2024-10-21", "embeddings") == (
        "https://r.openai.azure.com/openai/deployments/my%20dep/embeddings?api-version=2024-10-21"
    )
    assert request_url("azure", "https://r.openai.azure.com/", "d", None, "completions") == (
        "https://r.openai.azure.com/openai/v1/completions"
    )
    assert request_url("openai", "http://h:1", "d", "ignored", "completions") == "http://h:1/v1/completions"
    assert [go_duration(s) for s in (0, 0.05, 1.2, 90.0)] == ["0s", "50ms", "1.2s", "1m30s"]


def test_completion_and_embedding_templates_pickle_by_config() -> None:
    """Completion and embedding templates build their bodies once and rebuild identically from a pickle."""
    completion = CompletionRequestTemplate(
        "http://h",
        "d",
        "2024-10-21",
        "k",
        model="d",
        prompt="the of",
        max_tokens=5,
        stream=True,
        include_usage=True,
    )
    assert completion.url == "http://h/openai/deployments/d/completions?api-version=2024-10-21"
    assert orjson.loads(completion.body) == {
        "model": "d",
        "prompt": "the of",
        "max_tokens": 5,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    assert completion.headers_for("x")["api-key"] == "k"
    embedding = EmbeddingRequestTemplate(
        "http://h", "emb", None, "k", model="emb", input=["a"], flavor="openai"
    )
    assert embedding.url == "http://h/v1/embeddings"
    assert orjson.loads(embedding.body) == {"model": "emb", "input": ["a"], "encoding_format": "base64"}
    assert embedding.headers_for("x")["Accept"] == "application/json"
    for template in (completion, embedding):
        clone = pickle.loads(pickle.dumps(template))
        assert type(clone) is type(template)
        assert (clone.url, clone.body, clone.headers_for("r")) == (
            template.url,
            template.body,
            template.headers_for("r"),
        )
    with pytest.raises(ValueError, match="encoding_format"):
        EmbeddingRequestTemplate("http://h", "e", None, "k", model="e", input="a", encoding_format="int8")  # type: ignore[arg-type]


def test_completion_stream_parser_counts_text_chunks() -> None:
    """The completions parser counts non-empty text chunks and reads finish, usage and [DONE]."""
    for flavor in ("azure", "openai"):
        encoder = CompletionChunkEncoder("cmpl-1", 1, "m", usage_null=True, flavor=flavor)  # type: ignore[arg-type]
        body = b"".join(
            [
                *encoder.prelude(),
                *encoder.start(),
                encoder.content(" the of"),
                encoder.content(" and"),
                encoder.finish("stop"),
                encoder.usage(5, 3),
                SSE_DONE,
            ]
        )
        assert completion_stream_events([body]) == [
            (EV_ID, "cmpl-1"),
            (EV_TOKEN, 2),
            (EV_TOKEN, 1),
            (EV_FINISH, "stop"),
            (EV_USAGE, 5, 3),
            (EV_DONE,),
        ]
        parser = CompletionStreamParser()
        assert parser.feed(body) == 2
        assert (parser.tokens_out_approx, parser.done) == (3, True)
        assert stream_events([body])[-1] == (EV_DONE,)  # the chat parser sees no deltas in it
        assert ChatStreamParser().feed(body) == 0


def test_non_stream_parsers_read_completions_embeddings_and_openai_errors() -> None:
    """Completion bodies give text and usage, embeddings count and size vectors, OpenAI errors a code."""
    result = parse_completion_response(
        b'{"id":"cmpl-9","object":"text_completion",'
        b'"choices":[{"text":" a b","index":0,"finish_reason":"stop"}],'
        b'"usage":{"prompt_tokens":4,"completion_tokens":2,"total_tokens":6}}'
    )
    assert (result.content, result.tokens_out_approx, result.usage_in, result.usage_out) == (" a b", 2, 4, 2)
    assert (result.response_id, result.finish_reason, result.error) == ("cmpl-9", "stop", None)
    assert parse_completion_response(b"{nope").error is not None
    b64 = parse_embeddings_response(
        b'{"object":"list","data":[{"object":"embedding","index":0,"embedding":"AACAPwAAAEA="},'
        b'{"object":"embedding","index":1,"embedding":"AACAPwAAAEA="}],"usage":{"prompt_tokens":3,"total_tokens":3}}'
    )
    assert b64 == (2, 2, 3, None)
    floats = parse_embeddings_response(b'{"data":[{"embedding":[0.5,0.5,0.5]}],"usage":{"prompt_tokens":1}}')
    assert floats == (1, 3, 1, None)
    assert parse_embeddings_response(b'{"data":[{"x":1}]}').error is not None
    body = (
        b'{"error":{"message":"Rate limit reached","type":"tokens","param":null,'
        b'"code":"rate_limit_exceeded"}}'
    )
    assert parse_error_body(body) == ("rate_limit_exceeded", "Rate limit reached")
    assert parse_embeddings_response(body).error == "rate_limit_exceeded: Rate limit reached"


async def test_templates_drive_the_mock_like_the_engine() -> None:
    """Bytes built by the templates are accepted by both mocks, and the parsers read what comes back."""
    azure = ScriptedRuntime(endpoint_config())
    oa = ScriptedRuntime(endpoint_config(cloud="openai", dialect="openai", region="us"))

    async with (
        serve_app(make_azure_app(azure)) as azure_url,
        serve_app(make_openai_app(oa)) as oa_url,
        aiohttp.ClientSession() as session,
    ):
        for base, flavor, api_version in ((azure_url, "azure", "2024-10-21"), (oa_url, "openai", None)):
            completion = CompletionRequestTemplate(
                base,
                "gpt-4o",
                api_version,
                "k",
                model="gpt-4o",
                prompt="the of",
                max_tokens=4,
                stream=True,
                include_usage=True,
                flavor=flavor,  # type: ignore[arg-type]
            )
            async with session.post(
                completion.url, data=completion.body, headers=completion.headers_for("c")
            ) as r:
                events = completion_stream_events([await r.read()])
            assert [e[0] for e in events].count(EV_TOKEN) == 4
            assert events[-2:] == [(EV_USAGE, 2, 4), (EV_DONE,)]
            embedding = EmbeddingRequestTemplate(
                base,
                "emb",
                api_version,
                "k",
                model="emb",
                input=["x", "y z"],
                flavor=flavor,  # type: ignore[arg-type]
            )
            async with session.post(
                embedding.url, data=embedding.body, headers=embedding.headers_for("e")
            ) as r:
                assert parse_embeddings_response(await r.read()) == (2, 256, 3, None)
    for runtime in (azure, oa):
        assert [(r["request_id"], r["api"]) for r in rows_of(runtime)] == [
            ("c", "completions"),
            ("e", "embeddings"),
        ]


def test_embedding_vectors_are_deterministic_unit_vectors() -> None:
    """The same text gives the same unit-norm float32 vector, another text a different one."""
    a, b = embedding_vector("hello world"), embedding_vector("hello world")
    assert a == b
    assert a.typecode == "f"
    assert abs(sum(x * x for x in a) - 1.0) < 1e-5
    assert embedding_vector("hello") != a
    assert len(embedding_vector("x", 1536)) == 1536
