"""Cloud fingerprints of HTTP responses (``../shared/protocols.md`` §8), both directions.

``vendor_headers`` is what a faithful mock of a cloud sends; ``attribute`` reads a response's
headers back into (cloud, region, server request id). Vendor headers can be copied by a
gateway, so the mocks also stamp ``x-mock-cloud`` / ``x-mock-region``, and their ledgers are
the ground truth; a disagreement is an *attestation mismatch* (judged in harness.compliance).
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

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


def vendor_headers(cloud: str, region: str, client_request_id: str | None) -> list[tuple[str, str]]:
    """The headers a real response from ``cloud`` carries, for the mocks to send.

    Values that vary per request (ids) are fresh; ``client_request_id`` is echoed where the
    cloud echoes it. Rate-limit headers are added by the mock's limiter, not here.
    """
    if cloud == "azure":
        apim = client_request_id or str(uuid.uuid4())
        return [
            ("apim-request-id", apim),
            ("x-ms-client-request-id", client_request_id or apim),
            ("x-request-id", str(uuid.uuid4())),
            ("x-ms-region", azure_region_display(region)),
            ("azureml-model-session", "d008-20260215231538"),
            ("x-accel-buffering", "no"),
            ("x-content-type-options", "nosniff"),
            ("strict-transport-security", "max-age=31536000; includeSubDomains; preload"),
            ("cache-control", "no-cache, must-revalidate"),
            ("access-control-allow-origin", "*"),
        ]
    if cloud == "openai":
        headers = [
            ("openai-organization", "org-mock"),
            ("openai-project", "proj_mock"),
            ("openai-processing-ms", "1"),
            ("openai-version", "2020-10-01"),
            ("x-request-id", "req_" + uuid.uuid4().hex),
            ("server", "cloudflare"),
            ("cf-ray", uuid.uuid4().hex[:16] + "-IAD"),
            ("strict-transport-security", "max-age=31536000; includeSubDomains; preload"),
        ]
        if client_request_id:
            headers.append(("x-client-request-id", client_request_id))
        return headers
    if cloud == "aws":
        return [("x-amzn-RequestId", str(uuid.uuid4())), ("x-mock-aws-region", region)]
    if cloud == "gcp":
        return [
            ("server", "scaffolding on HTTPServer2"),
            ("server-timing", "gfet4t7; dur=1"),
            ("vary", "Origin"),
            ("vary", "X-Origin"),
            ("vary", "Referer"),
            ("x-frame-options", "SAMEORIGIN"),
            ("x-content-type-options", "nosniff"),
            ("x-xss-protection", "0"),
        ]
    return []  # "oracle" / "other": no known fingerprint; the mock headers still attest


def mock_headers(cloud: str, region: str) -> list[tuple[str, str]]:
    """The mock-only attestation headers every mock response carries."""
    return [("x-mock-cloud", cloud), ("x-mock-region", region)]
