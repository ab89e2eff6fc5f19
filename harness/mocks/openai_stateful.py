"""Stateful OpenAI-family APIs on a mock endpoint: Responses, Conversations and Realtime.

``add_stateful_routes`` is called by the Azure and OpenAI app factories (harness.mocks.azure_openai)
to add these routes to an endpoint's app.
"""

from __future__ import annotations

from typing import Literal

from aiohttp import web

from harness.mocks.runtime import EndpointRuntime


def add_stateful_routes(
    app: web.Application, runtime: EndpointRuntime, *, flavor: Literal["azure", "openai"]
) -> None:
    """Add the Responses, Conversations and Realtime routes for ``flavor``'s URL forms."""
