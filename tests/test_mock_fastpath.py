"""The mocks' non-stream hot path: cheap unique ids in the clouds' shapes, header blocks built
once per endpoint, cached body templates and admission without a coroutine; each must give
exactly what the slow way gives."""

from __future__ import annotations

import multiprocessing
import re
import uuid

import pytest

from harness.mocks.azure_openai import _Endpoint
from harness.mocks.ledger import Ledger
from harness.mocks.runtime import Admission, EndpointRuntime
from harness.profile.models import Capacity, FleetEndpoint
from harness.protocols import azure_openai as wire
from harness.protocols.fingerprint import IDS, VendorHeaders, attribute, mock_headers, vendor_headers
from harness.protocols.tokens import output_text

ID_HEADERS = {"apim-request-id", "x-ms-client-request-id", "x-request-id", "x-amzn-RequestId", "cf-ray"}


def runtime_of(cloud: str = "azure", concurrency: int | None = None) -> EndpointRuntime:
    endpoint = FleetEndpoint(
        name="ep",
        cloud=cloud,  # type: ignore[arg-type]
        region="eastus",
        deployments=["gpt-4o"],
        capacity=Capacity(max_concurrency=concurrency),
    )
    return EndpointRuntime(endpoint, Ledger(), 3)


def test_ids_are_unique_version_4_uuids_and_hex_of_the_right_length() -> None:
    """Ids never repeat in a process and parse as the shapes the clouds use."""
    uuids = [IDS.uuid() for _ in range(20_000)]
    assert len(set(uuids)) == len(uuids)
    assert all(uuid.UUID(u).version == 4 and str(uuid.UUID(u)) == u for u in uuids[:500])
    hexes = [IDS.hex32() for _ in range(1000)] + [IDS.hex16() for _ in range(1000)]
    assert len(set(hexes)) == len(hexes)
    assert all(re.fullmatch(r"[0-9a-f]{32}", h) for h in hexes[:1000])
    assert all(re.fullmatch(r"[0-9a-f]{16}", h) for h in hexes[1000:])


def _child_ids(queue: multiprocessing.Queue[list[str]]) -> None:
    queue.put([IDS.uuid() for _ in range(100)])


def test_a_forked_child_does_not_repeat_its_parents_ids() -> None:
    """After a fork the child draws a new prefix, so parent and child ids never collide."""
    ctx = multiprocessing.get_context("fork")
    queue: multiprocessing.Queue[list[str]] = ctx.Queue()
    child = ctx.Process(target=_child_ids, args=(queue,))
    child.start()
    theirs = queue.get(timeout=30)
    child.join(timeout=30)
    ours = [IDS.uuid() for _ in range(100)]
    assert not set(ours) & set(theirs)
    assert {u[:24] for u in ours}.isdisjoint({u[:24] for u in theirs})


@pytest.mark.parametrize("cloud", ["azure", "openai", "aws", "gcp", "other"])
@pytest.mark.parametrize("crid", [None, "client-id-1"])
def test_header_block_equals_vendor_headers_but_for_fresh_ids(cloud: str, crid: str | None) -> None:
    """The per-endpoint block sends the same names and constant values as vendor_headers, then the mock's."""
    block = VendorHeaders(cloud, "eastus", mock_headers(cloud, "eastus"))
    fast, slow = block.build(crid), vendor_headers(cloud, "eastus", crid) + mock_headers(cloud, "eastus")
    assert [name for name, _ in fast] == [name for name, _ in slow]
    assert [v for n, v in fast if n not in ID_HEADERS] == [v for n, v in slow if n not in ID_HEADERS]
    assert block.build(crid) is not fast  # a fresh list each time: callers append to it
    fp = attribute({n.lower(): v for n, v in fast})
    assert fp.mock_cloud == cloud
    if crid and cloud == "azure":
        assert dict(fast)["apim-request-id"] == dict(fast)["x-ms-client-request-id"] == crid
    if crid and cloud == "openai":
        assert dict(fast)["x-client-request-id"] == crid


@pytest.mark.parametrize("flavor", ["azure", "openai"])
@pytest.mark.parametrize("chat", [True, False])
def test_body_templates_give_the_encoders_bytes(flavor: str, chat: bool) -> None:
    """A non-stream body filled into its cached template equals the wire encoder's, for each id."""
    endpoint = _Endpoint(runtime_of(), flavor)  # type: ignore[arg-type]
    encode = wire.chat_completion_body if chat else wire.completion_body
    for n, (rid, created, tokens_in, n_out, finish) in enumerate(
        [("chatcmpl-a1", 1_700_000_000, 7, 1, "stop"), ("chatcmpl-a2", 1_700_000_001, 7, 1, "stop"),
         ("cmpl-b", 5, 100, 16, "length"), ("chatcmpl-a3", 1_700_000_002, 7, 1, "stop")]
    ):  # fmt: skip
        got = endpoint._body(chat, rid, created, "gpt-4o", tokens_in, n_out, finish)
        want = encode(rid, created, "gpt-4o", output_text(n_out), tokens_in, n_out, finish, flavor=flavor)  # type: ignore[arg-type]
        assert got == want, n
    assert len(endpoint._bodies) == 2 and None not in endpoint._bodies.values()


async def test_admission_is_immediate_when_a_slot_is_free_and_awaitable_when_queued() -> None:
    """admit_nowait answers at once with a free slot and hands back an awaitable when the request queues."""
    runtime = runtime_of(concurrency=1)
    first = runtime.admit_nowait("gpt-4o", 10)
    assert isinstance(first, Admission) and first.rejection is None
    waiting = runtime.admit_nowait("gpt-4o", 10)
    assert not isinstance(waiting, Admission)
    first.release()
    second = await waiting  # type: ignore[misc]
    assert second.rejection is None and runtime.admitted == 2
    second.release()
    assert runtime.counts()["in_flight"] == 0
