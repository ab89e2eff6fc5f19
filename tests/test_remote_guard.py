"""The remote-target guard: a load test reaches outside loopback only when the profile says so.

Pointing a load generator at the wrong URL is an outage for someone else. A target outside
loopback needs ``allow_remote = true``; otherwise nothing starts (exit 2, one line saying what to
set). Mocks listen on loopback unless a fleet file says otherwise, and TLS certificates are
verified. No traffic leaves the machine here: remote profiles are only validated.
"""

from __future__ import annotations

import ssl
import subprocess
from pathlib import Path

import pandas as pd
import pytest
from aiohttp import web

from harness.errors import ExitCode, RemoteTargetError
from harness.mocks.fleet import start_fleet
from harness.profile import load_fleet
from harness.profile.load import is_loopback_host
from harness.runner import prepare, run_loaded
from tests.conftest import PROFILES, run_cli

POLICY = PROFILES / "policies/azure-stateless-exclusive.toml"


def target_profile(
    tmp_path: Path, url: str, *, allow_remote: bool, client: str = "", name: str = "p"
) -> Path:
    profile = tmp_path / f"{name}.toml"
    profile.write_text(f"""
name = "remote-guard"
duration_s = 0.5
[target]
policy = "{POLICY}"
allow_remote = {str(allow_remote).lower()}
[target.endpoints.ext]
base_url = "{url}"
cloud = "azure"
[client]
connect_timeout_s = 2
{client}
[validity]
max_schedule_lag_p99_ms = 5000
max_event_loop_lag_p99_ms = 5000
[[scenarios]]
name = "chat"
stream = false
arrival = {{ process = "constant", rate_rps = 10 }}
routes = [{{ endpoint = "ext", deployment = "gpt-4o" }}]
""")
    return profile


REMOTE = [
    "https://myres.openai.azure.com",
    "http://10.0.0.7:8000",
    "http://0.0.0.0:8000",
    "http://127.0.0.1.nip.io:8000",  # a hostname that merely starts like a loopback address
    "http://127.evil.example:8000",
    "http://[2001:db8::1]:8000",
    "http://[::ffff:10.0.0.1]:8000",
]
LOOPBACK = [
    "http://127.0.0.1:8000",
    "http://127.8.9.10:8000",
    "http://localhost:8000",
    "http://LOCALHOST.:8000",
    "http://[::1]:8000",
    "http://[::ffff:127.0.0.1]:8000",
]


@pytest.mark.parametrize("url", REMOTE)
def test_remote_targets_are_refused_without_allow_remote(tmp_path: Path, url: str) -> None:
    """A target outside loopback without allow_remote is refused before anything starts, naming the fix."""
    with pytest.raises(RemoteTargetError) as info:
        prepare(target_profile(tmp_path, url, allow_remote=False))
    message = info.value.one_line()
    assert "target.endpoints.ext" in message and "allow_remote = true" in message
    assert "\n" not in message
    assert info.value.exit_code == ExitCode.INVALID_INPUT


@pytest.mark.parametrize("url", REMOTE)
def test_remote_targets_validate_with_allow_remote(tmp_path: Path, url: str) -> None:
    """With allow_remote = true the same profiles validate (no traffic is sent here)."""
    loaded = prepare(target_profile(tmp_path, url, allow_remote=True))
    assert loaded.profile.target.allow_remote


@pytest.mark.parametrize("url", LOOPBACK)
def test_loopback_targets_need_no_opt_in(tmp_path: Path, url: str) -> None:
    """Loopback addresses and localhost validate without allow_remote."""
    prepare(target_profile(tmp_path, url, allow_remote=False))


def test_is_loopback_judges_names_without_resolving_them() -> None:
    """Only localhost and loopback IP literals are loopback; a name is never resolved."""
    assert is_loopback_host("127.0.0.1") and is_loopback_host("::1") and is_loopback_host("localhost")
    assert not is_loopback_host("127.0.0.1.example.com")
    assert not is_loopback_host("")


@pytest.mark.slow
def test_cli_refuses_a_remote_run_and_validates_it_once_allowed(tmp_path: Path) -> None:
    """`harness run` on a remote target without opt-in exits 2 with one line and creates no run directory;
    `harness profiles validate` accepts the profile once allow_remote = true."""
    refused = target_profile(tmp_path, "https://myres.openai.azure.com", allow_remote=False, name="refused")
    results = tmp_path / "r"
    run = run_cli("run", str(refused), "--results", str(results), "--no-progress")
    assert run.returncode == ExitCode.INVALID_INPUT, run.stdout + run.stderr
    lines = [line for line in run.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "allow_remote = true" in lines[0] and "myres.openai.azure.com" in lines[0]
    assert not results.exists() or not any(results.iterdir())  # nothing started, nothing written

    allowed = target_profile(tmp_path, "https://myres.openai.azure.com", allow_remote=True, name="allowed")
    validate = run_cli("profiles", "validate", str(allowed))
    assert validate.returncode == ExitCode.PASS, validate.stdout + validate.stderr


async def test_mocks_bind_loopback_by_default() -> None:
    """Every mock endpoint and the admin API listen on 127.0.0.1 unless the fleet file names another host."""
    fleet = load_fleet(PROFILES / "fleets/multicloud.toml")
    assert all(endpoint.host == "127.0.0.1" for endpoint in fleet.endpoints)
    running = await start_fleet(fleet)
    try:
        for runner in running._runners:  # endpoints, then the admin API
            for address in runner.addresses:
                assert address[0] == "127.0.0.1", address
        assert all(info["base_url"].startswith("http://127.0.0.1:") for info in running.endpoints)
        assert running.admin_url.startswith("http://127.0.0.1:")
    finally:
        await running.stop()


@pytest.fixture(scope="module")
def self_signed(tmp_path_factory: pytest.TempPathFactory) -> tuple[ssl.SSLContext, Path]:
    """A server TLS context with a self-signed certificate for 127.0.0.1 (trusted by nobody)."""
    tmp = tmp_path_factory.mktemp("tls")
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
            "-nodes", "-keyout", str(tmp / "key.pem"), "-out", str(tmp / "cert.pem"), "-days", "1",
            "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )  # fmt: skip
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(tmp / "cert.pem", tmp / "key.pem")
    return context, tmp / "cert.pem"


async def _serve_tls(context: ssl.SSLContext) -> tuple[web.AppRunner, str, list[int]]:
    reached = [0]

    async def handler(request: web.Request) -> web.Response:
        reached[0] += 1
        return web.json_response({})

    app = web.Application()
    app.router.add_post("/{tail:.*}", handler)
    runner = web.AppRunner(app, handle_signals=False)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0, ssl_context=context).start()
    return runner, f"https://127.0.0.1:{runner.addresses[0][1]}", reached


@pytest.mark.parametrize("transport", ["aiohttp", "lean"])
@pytest.mark.parametrize("trust", ["ca_file", "verify_off"])
async def test_tls_trust_can_be_extended_or_explicitly_switched_off(
    tmp_path: Path, self_signed: tuple[ssl.SSLContext, Path], transport: str, trust: str
) -> None:
    """The same untrusted server is reached once the profile names its CA (tls_ca_file) or turns
    verification off explicitly (tls_verify = false)."""
    context, cert = self_signed
    runner, url, reached = await _serve_tls(context)
    option = f'tls_ca_file = "{cert}"' if trust == "ca_file" else "tls_verify = false"
    try:
        profile = target_profile(
            tmp_path, url, allow_remote=False, client=f'transport = "{transport}"\n{option}'
        )
        outcome = await run_loaded(prepare(profile), tmp_path / "r", progress=False, report=False)
    finally:
        await runner.cleanup()
    records = pd.read_parquet(outcome.run_dir / "requests.parquet")
    assert len(records) > 0 and reached[0] == len(records)
    assert "connect" not in set(records["error_kind"].dropna())


@pytest.mark.parametrize("transport", ["aiohttp", "lean"])
async def test_tls_certificates_are_verified_by_default(
    tmp_path: Path, self_signed: tuple[ssl.SSLContext, Path], transport: str
) -> None:
    """An HTTPS target with an untrusted certificate gets connect errors and no request reaches it."""
    self_signed_context = self_signed[0]
    reached = 0

    async def handler(request: web.Request) -> web.Response:
        nonlocal reached
        reached += 1
        return web.json_response({})

    app = web.Application()
    app.router.add_post("/{tail:.*}", handler)
    runner = web.AppRunner(app, handle_signals=False)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0, ssl_context=self_signed_context).start()
    url = f"https://127.0.0.1:{runner.addresses[0][1]}"
    try:
        profile = target_profile(tmp_path, url, allow_remote=False, client=f'transport = "{transport}"')
        outcome = await run_loaded(prepare(profile), tmp_path / "r", progress=False, report=False)
    finally:
        await runner.cleanup()
    records = pd.read_parquet(outcome.run_dir / "requests.parquet")
    assert len(records) > 0
    assert set(records["error_kind"]) == {"connect"}
    assert records["error_detail"].str.contains("certificate|CERTIFICATE", regex=True).all()
    assert reached == 0
