"""Request classes derived from API semantics, never from a label the caller chose.

Stateless: chat/completions, completions, embeddings, Responses with ``store=false`` and no
``previous_response_id`` or ``conversation``, images, audio.
Stateful: Responses that store state (``store`` true or unset: the server default is true)
or chain it (``previous_response_id``, ``conversation``), conversations, assistants threads,
Realtime sessions.
"""

from __future__ import annotations

import re
from typing import Final, Literal

RequestClass = Literal["stateless", "stateful"]

STATELESS_APIS: Final = frozenset(
    {
        "chat.completions",
        "completions",
        "embeddings",
        "images.generations",
        "images.edits",
        "audio.transcriptions",
        "audio.translations",
        "audio.speech",
        # alternate-cloud dialects: single-shot calls hold no server-side state
        "bedrock.converse",
        "bedrock.converse_stream",
        "bedrock.invoke",
        "bedrock.invoke_stream",
        "vertex.generate_content",
        "vertex.stream_generate_content",
    }
)
STATEFUL_APIS: Final = frozenset({"conversations", "assistants.threads", "assistants.runs", "realtime"})

# OpenAI model families; everything else (Claude, Gemini, Llama, Mistral, ...) is "other".
_OPENAI_MODEL = re.compile(
    r"^(gpt-|o\d|chatgpt-|text-embedding-|text-davinci|davinci|babbage|dall-e|gpt-image|whisper|tts-|"
    r"codex|computer-use|omni-moderation|text-moderation)",
    re.IGNORECASE,
)


def request_class(
    api: str,
    store: bool | None = None,
    previous_response_id: str | None = None,
    conversation: str | None = None,
) -> RequestClass:
    """The class of one request, from its API and the flags that make it keep state."""
    if api in STATELESS_APIS:
        return "stateless"
    if api == "responses":
        if previous_response_id or conversation:
            return "stateful"
        return "stateless" if store is False else "stateful"
    if api in STATEFUL_APIS:
        return "stateful"
    # Unknown APIs are treated as stateful only if they say so; default to the stricter class.
    return "stateless"


def model_family(model: str) -> Literal["openai", "other"]:
    """``openai`` for OpenAI models (by name, optionally behind a ``vendor/`` prefix)."""
    name = model.rsplit("/", 1)[-1]
    if name.startswith("openai."):  # Bedrock ids such as openai.gpt-oss-120b-1:0
        return "openai"
    return "openai" if _OPENAI_MODEL.match(name) else "other"
