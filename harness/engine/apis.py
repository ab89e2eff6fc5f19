"""What the engine needs from each API it can drive, decided once per route (STYLE 4 and 5).

A profile scenario names an ``api``; with the endpoint's dialect that picks an :class:`ApiSpec`:
how to build the request template for a prompt, which stream parser reads a streamed answer,
how a complete body and an error body are read. The dispatcher only ever calls these through
the spec, so adding an API is one entry here, never a branch in the hot path.

Every body reader returns a :class:`BodyResult` in one shape, whatever the dialect.

    api                 dialects               stream   record api
    chat.completions    azure_openai, openai   either   chat.completions
    completions         azure_openai, openai   either   completions
    embeddings          azure_openai, openai   never    embeddings
    responses           azure_openai, openai   either   responses (stateful with a session)
    bedrock.converse    bedrock                either   bedrock.converse / bedrock.converse_stream
    vertex.generate_content vertex             either   vertex.generate_content / ..._stream_...
    realtime            azure_openai, openai   always   realtime (WebSocket sessions only)
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final, NamedTuple

from harness.profile.models import API_DIALECTS
from harness.protocols import azure_openai as aoai, bedrock, responses, vertex
from harness.protocols.events import StreamState
from harness.protocols.openai_flavor import Flavor

# APIs that only exist as sessions (a WebSocket carries every turn)
SESSION_ONLY_APIS: Final = frozenset({"realtime"})
# APIs whose turns can chain server-side state
CHAINABLE_APIS: Final = frozenset({"responses", "realtime"})
NEVER_STREAM_APIS: Final = frozenset({"embeddings"})


class BodyResult(NamedTuple):
    """A complete (non-stream) answer, read the same way for every dialect."""

    usage_in: int | None
    usage_out: int | None
    tokens_out_approx: int
    response_id: str | None
    error: str | None


def _generation(parse: Callable[[bytes], Any]) -> Callable[[bytes], BodyResult]:
    """Chat, completion, Responses, Converse and generateContent results share the layout
    (text, tokens_out_approx, usage_in, usage_out, response_id, finish, error)."""

    def read(body: bytes) -> BodyResult:
        r = parse(body)
        return BodyResult(r[2], r[3], r[1], r[4], r[6])

    return read


def _embeddings(body: bytes) -> BodyResult:
    r = aoai.parse_embeddings_response(body)
    return BodyResult(r.usage_in, 0 if r.error is None else None, 0, None, r.error)


def _openai_error(body: bytes, headers: Mapping[str, str]) -> tuple[str | None, str | None]:
    return aoai.parse_error_body(body)


def _bedrock_error(body: bytes, headers: Mapping[str, str]) -> tuple[str | None, str | None]:
    return bedrock.parse_error_body(body, headers.get("x-amzn-errortype"))


def _vertex_error(body: bytes, headers: Mapping[str, str]) -> tuple[str | None, str | None]:
    return vertex.parse_error_body(body)


@dataclass(frozen=True, slots=True)
class ApiSpec:
    """How one API is read on one dialect: the stream parser class, the body and error readers."""

    stream_parser: Callable[[], StreamState]
    read_body: Callable[[bytes], BodyResult]
    read_error: Callable[[bytes, Mapping[str, str]], tuple[str | None, str | None]]


_SPECS: Final[dict[str, ApiSpec]] = {
    "chat.completions": ApiSpec(aoai.ChatStreamParser, _generation(aoai.parse_chat_response), _openai_error),
    "completions": ApiSpec(
        aoai.CompletionStreamParser, _generation(aoai.parse_completion_response), _openai_error
    ),
    "embeddings": ApiSpec(aoai.ChatStreamParser, _embeddings, _openai_error),
    "responses": ApiSpec(
        responses.ResponsesStreamParser, _generation(responses.parse_response), _openai_error
    ),
    "bedrock.converse": ApiSpec(
        bedrock.BedrockStreamParser, _generation(bedrock.parse_converse_response), _bedrock_error
    ),
    "vertex.generate_content": ApiSpec(
        vertex.VertexStreamParser, _generation(vertex.parse_generate_response), _vertex_error
    ),
}


def spec_for(api: str) -> ApiSpec:
    return _SPECS[api]


class TemplateFactory:
    """Builds the request template of one (scenario, endpoint, deployment) for a prompt and an
    output budget; the route calls it once for the scenario's own sizes and again (cached) for
    each distinct size a trace asks for. Pickles by configuration."""

    __slots__ = (
        "api",
        "api_key",
        "api_version",
        "base_url",
        "deployment",
        "dialect",
        "include_usage",
        "store",
        "stream",
    )

    def __init__(
        self,
        api: str,
        dialect: str,
        base_url: str,
        deployment: str,
        api_key: str | None,
        api_version: str,
        *,
        stream: bool,
        include_usage: bool,
        store: bool,
    ) -> None:
        if dialect not in API_DIALECTS.get(api, ()):
            raise ValueError(f"api {api!r} cannot be sent to a {dialect!r} endpoint")
        self.api = api
        self.dialect = dialect
        self.base_url = base_url
        self.deployment = deployment
        self.api_key = api_key
        self.api_version = api_version
        self.stream = stream and api not in NEVER_STREAM_APIS
        self.include_usage = include_usage
        self.store = store

    def __repr__(self) -> str:  # never print the key
        return f"TemplateFactory({self.api}, {self.dialect}, {self.base_url}, {self.deployment})"

    def __call__(self, prompt: str, max_tokens: int) -> Any:
        api, dialect = self.api, self.dialect
        flavor: Flavor = "azure" if dialect == "azure_openai" else "openai"
        if api in ("chat.completions", "completions"):
            cls = aoai.ChatRequestTemplate if api == "chat.completions" else aoai.CompletionRequestTemplate
            return cls(
                self.base_url,
                self.deployment,
                self.api_version if flavor == "azure" else None,
                self.api_key,
                model=self.deployment,
                prompt=prompt,
                max_tokens=max_tokens,
                stream=self.stream,
                include_usage=self.include_usage,
                flavor=flavor,
            )
        if api == "embeddings":
            return aoai.EmbeddingRequestTemplate(
                self.base_url,
                self.deployment,
                self.api_version if flavor == "azure" else None,
                self.api_key,
                model=self.deployment,
                input=prompt,
                flavor=flavor,
            )
        if api == "responses":
            return responses.ResponsesRequestTemplate(
                self.base_url,
                self.deployment,
                self.api_key,
                url_form="azure" if flavor == "azure" else "openai",
                api_version=self.api_version if flavor == "azure" else None,
                prompt=prompt,
                max_output_tokens=max_tokens,
                stream=self.stream,
                store=self.store,
            )
        if api == "bedrock.converse":
            operation = bedrock.CONVERSE_STREAM if self.stream else bedrock.CONVERSE
            return bedrock.BedrockRequestTemplate(
                self.base_url, self.deployment, operation, prompt=prompt, max_tokens=max_tokens
            )
        if api == "vertex.generate_content":
            # express mode (publisher path, API key): what a key from the environment authorises
            return vertex.GenerateRequestTemplate(
                self.base_url,
                self.deployment,
                self.api_key,
                prompt=prompt,
                max_tokens=max_tokens,
                stream=self.stream,
                auth="api-key",
            )
        raise ValueError(f"api {api!r} has no HTTP request template (realtime runs as WebSocket sessions)")


def record_api(api: str, template: Any) -> str:
    """The API name a record carries: Bedrock and Vertex name the streaming operation apart."""
    if api in ("bedrock.converse", "vertex.generate_content"):
        return str(template.api)
    return api
