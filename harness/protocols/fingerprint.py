"""Cloud fingerprints of HTTP responses (``../shared/protocols.md`` §8), both directions.

``vendor_headers`` is what a faithful mock of a cloud sends; ``attribute`` reads a response's
headers back into (cloud, region, server request id). Vendor headers can be copied by a
gateway, so the mocks also stamp ``x-mock-cloud`` / ``x-mock-region``, and their ledgers are
the ground truth; a disagreement is an *attestation mismatch* (judged in harness.compliance).
"""

from __future__ import annotations

import itertools
import os
import secrets
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Final

from multidict import istr

# Azure sends the region's display name in x-ms-region; profiles and fleets use the slug.
AZURE_REGIONS: Final[dict[str, str]] = {
    "eastus": "East US",
    "eastus2": "East US 2",
    "westus": "West US",
    "westus3": "West US 3",
    "northcentralus": "North Central US",
    "southcentralus": "South Central US",
    "canadaeast": "Canada East",
    "swedencentral": "Sweden Central",
    "francecentral": "France Central",
    "germanywestcentral": "Germany West Central",
    "westeurope": "West Europe",
    "northeurope": "North Europe",
    "uksouth": "UK South",
    "switzerlandnorth": "Switzerland North",
    "norwayeast": "Norway East",
    "polandcentral": "Poland Central",
    "spaincentral": "Spain Central",
    "italynorth": "Italy North",
    "japaneast": "Japan East",
    "australiaeast": "Australia East",
    "koreacentral": "Korea Central",
    "southindia": "South India",
    "brazilsouth": "Brazil South",
    "southafricanorth": "South Africa North",
    "uaenorth": "UAE North",
}
_AZURE_SLUGS: Final = {display.lower(): slug for slug, display in AZURE_REGIONS.items()}


def azure_region_display(slug: str) -> str:
    """``swedencentral`` → ``Sweden Central`` (unknown slugs pass through)."""
    return AZURE_REGIONS.get(slug, slug)


def azure_region_slug(display: str) -> str:
    """``Sweden Central`` → ``swedencentral`` (unknown names lowercased without spaces)."""
    return _AZURE_SLUGS.get(display.lower(), display.lower().replace(" ", ""))


@dataclass(frozen=True, slots=True)
class Fingerprint:
    cloud: str | None  # from vendor headers: azure | openai | aws | gcp | None (unknown)
    region: str | None
    request_id: str | None  # the server's own request id
    mock_cloud: str | None  # x-mock-cloud (mocks only)
    mock_region: str | None


UNKNOWN: Final = Fingerprint(None, None, None, None, None)


def attribute(headers: Mapping[str, str]) -> Fingerprint:
    """Attribute a response to a cloud by its decisive headers.

    ``headers`` must look names up case-insensitively (aiohttp's CIMultiDictProxy does; for a
    plain dict, pass lower-case keys). Order of checks: Azure's ``apim-request-id`` /
    ``x-ms-region``, OpenAI's ``openai-version``, AWS's ``x-amzn-requestid``, Google's
    ``server: scaffolding on HTTPServer2``.
    """
    get = headers.get
    mock_cloud = get("x-mock-cloud")
    mock_region = get("x-mock-region")
    apim = get("apim-request-id")
    ms_region = get("x-ms-region")
    if apim is not None or ms_region is not None:
        region = azure_region_slug(ms_region) if ms_region else None
        return Fingerprint("azure", region, apim or get("x-request-id"), mock_cloud, mock_region)
    if get("openai-version") is not None or get("openai-processing-ms") is not None:
        return Fingerprint("openai", None, get("x-request-id"), mock_cloud, mock_region)
    amzn = get("x-amzn-requestid")
    if amzn is not None:
        # Bedrock does not name its region in headers; the mock adds x-amzn-bedrock-region [UNC]
        return Fingerprint("aws", get("x-mock-aws-region"), amzn, mock_cloud, mock_region)
    server = get("server")
    if server is not None and server.startswith("scaffolding on HTTPServer2"):
        return Fingerprint("gcp", None, None, mock_cloud, mock_region)
    if mock_cloud is None:
        return UNKNOWN
    return Fingerprint(None, None, None, mock_cloud, mock_region)


# --------------------------------------------------------------------------- per-request ids
#
# ``str(uuid.uuid4())`` costs ~9 µs on this machine class (os.urandom + UUID object + formatting),
# and a mock response needs one to three. Ids only have to be unique and look like the cloud's,
# not be unpredictable: a random per-process prefix plus a counter does it for ~0.3 µs.

_ID_START_BELOW: Final = 1 << 47
"""The counter starts at a random value below this and fills the last 12 hex digits: another
2**47 ids per process before it would need a 13th."""


class _IdSource:
    """Unique ids in the clouds' shapes: a random prefix drawn once per process (again after a
    fork) and a process-wide counter in the last 12 hex digits."""

    __slots__ = ("_count", "_hex4", "_hex20", "_uuid")

    def __init__(self) -> None:
        self.reseed()

    def reseed(self) -> None:
        r = secrets.token_hex(10)
        variant = "89ab"[secrets.randbelow(4)]
        # xxxxxxxx-xxxx-4xxx-Vxxx-<12 hex counter>: a valid version-4 UUID string
        self._uuid = f"{r[:8]}-{r[8:12]}-4{r[12:15]}-{variant}{r[15:18]}-"
        self._hex20 = secrets.token_hex(10)
        self._hex4 = secrets.token_hex(2)
        self._count = itertools.count(secrets.randbelow(_ID_START_BELOW))

    def uuid(self) -> str:
        """``8-4-4-4-12`` lower-case hex, version 4 (as ``str(uuid.uuid4())``)."""
        return self._uuid + f"{next(self._count):012x}"

    def hex32(self) -> str:
        """32 lower-case hex digits (as ``uuid.uuid4().hex``)."""
        return self._hex20 + f"{next(self._count):012x}"

    def hex16(self) -> str:
        """16 lower-case hex digits (as a Cloudflare ray id without its colo suffix)."""
        return self._hex4 + f"{next(self._count):012x}"


IDS: Final = _IdSource()
"""The process's id source (``IDS.uuid()``, ``IDS.hex32()``, ``IDS.hex16()``)."""
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=IDS.reseed)  # a forked child must not repeat its parent's ids


# --------------------------------------------------------------------------- response headers

Headers = list[tuple[str, str]]

_AZURE_STATIC: Final = (
    ("azureml-model-session", "d008-20260215231538"),
    ("x-accel-buffering", "no"),
    ("x-content-type-options", "nosniff"),
    ("strict-transport-security", "max-age=31536000; includeSubDomains; preload"),
    ("cache-control", "no-cache, must-revalidate"),
    ("access-control-allow-origin", "*"),
)
_OPENAI_HEAD: Final = (
    ("openai-organization", "org-mock"),
    ("openai-project", "proj_mock"),
    ("openai-processing-ms", "1"),
    ("openai-version", "2020-10-01"),
)
_STS: Final = ("strict-transport-security", "max-age=31536000; includeSubDomains; preload")
_GCP_STATIC: Final = (
    ("server", "scaffolding on HTTPServer2"),
    ("server-timing", "gfet4t7; dur=1"),
    ("vary", "Origin"),
    ("vary", "X-Origin"),
    ("vary", "Referer"),
    ("x-frame-options", "SAMEORIGIN"),
    ("x-content-type-options", "nosniff"),
    ("x-xss-protection", "0"),
)


class VendorHeaders:
    """The headers a real response from one cloud and region carries, with everything constant
    built once: a call adds only the fresh ids and the echoed client request id.

    ``VendorHeaders(cloud, region).build(crid)`` equals ``vendor_headers(cloud, region, crid)``
    (a fresh list each time, so the caller may append to it); ``tail`` is appended after the
    vendor's own headers (the mock's attestation headers go there).
    """

    __slots__ = ("build", "cloud", "region")

    def __init__(self, cloud: str, region: str, tail: Headers | None = None) -> None:
        self.cloud = cloud
        self.region = region
        self.build: Callable[[str | None], Headers] = self._builder(list(tail or ()))

    def __call__(self, client_request_id: str | None) -> Headers:
        return self.build(client_request_id)

    def _builder(self, tail: Headers) -> Callable[[str | None], Headers]:
        # Names are multidict ``istr``s, made once: aiohttp turns every header name it is given
        # into one, and skips that for names that already are (~2.5 µs a response here).
        cloud, region, ids = self.cloud, self.region, IDS
        if cloud == "azure":
            static = _named([("x-ms-region", azure_region_display(region)), *_AZURE_STATIC, *tail])
            apim_h, client_h, request_h = (
                istr("apim-request-id"),
                istr("x-ms-client-request-id"),
                istr("x-request-id"),
            )

            def azure(crid: str | None) -> Headers:
                apim = crid or ids.uuid()
                return [(apim_h, apim), (client_h, apim), (request_h, ids.uuid()), *static]

            return azure
        if cloud == "openai":
            head = _named(_OPENAI_HEAD)
            request_h, ray_h, crid_h = istr("x-request-id"), istr("cf-ray"), istr("x-client-request-id")
            server, sts = _named([("server", "cloudflare"), _STS])
            rest = _named(tail)

            def openai(crid: str | None) -> Headers:
                headers = [
                    *head,
                    (request_h, "req_" + ids.hex32()),
                    server,
                    (ray_h, ids.hex16() + "-IAD"),
                    sts,
                ]
                if crid:
                    headers.append((crid_h, crid))
                headers += rest
                return headers

            return openai
        if cloud == "aws":
            static = _named([("x-mock-aws-region", region), *tail])
            amzn_h = istr("x-amzn-RequestId")
            return lambda _crid: [(amzn_h, ids.uuid()), *static]
        static = _named([*_GCP_STATIC, *tail] if cloud == "gcp" else tail)
        # "oracle" / "other": no known fingerprint; the mock headers still attest
        return lambda _crid: list(static)


def _named(headers: Iterable[tuple[str, str]]) -> Headers:
    return [(istr(name), value) for name, value in headers]


def vendor_headers(cloud: str, region: str, client_request_id: str | None) -> Headers:
    """The headers a real response from ``cloud`` carries, for the mocks to send.

    Values that vary per request (ids) are fresh; ``client_request_id`` is echoed where the
    cloud echoes it. Rate-limit headers are added by the mock's limiter, not here. A mock's
    hot path holds a :class:`VendorHeaders` instead, which builds the constant part once.
    """
    return VendorHeaders(cloud, region).build(client_request_id)


def mock_headers(cloud: str, region: str) -> list[tuple[str, str]]:
    """The mock-only attestation headers every mock response carries."""
    return [("x-mock-cloud", cloud), ("x-mock-region", region)]
