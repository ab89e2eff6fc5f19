"""Secret hygiene: an API key comes from the environment and appears in no output of any kind.

A load tester's outputs travel: run directories are attached to tickets and CI artifacts, logs
are pasted into chats. So the key a profile names is grepped for in every file of the run
directory (inside the Parquet files too), in what `harness run` and `harness report` print, and in
the mock's ledger; and a key pasted into the profile itself is refused without being echoed.
"""

from __future__ import annotations

import socket
import uuid
from pathlib import Path

import pandas as pd
import pytest

from harness.errors import ExitCode, HarnessError
from harness.runner import prepare
from tests.conftest import PROFILES, run_cli

POLICY = PROFILES / "policies/azure-stateless-exclusive.toml"
KEY_ENV = "HARNESS_SECRETS_TEST_KEY"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def secret_profile(tmp_path: Path) -> Path:
    """The embedded fleet on a fixed port, reached as an external endpoint that names ``KEY_ENV``."""
    port = free_port()
    fleet = tmp_path / "fleet.toml"
    fleet.write_text(f"""
name = "secrets"
[[endpoints]]
name = "az"
cloud = "azure"
region = "eastus"
port = {port}
deployments = ["gpt-4o"]
latency = {{ ttft_base_ms = 5, prefill_us_per_token = 0, itl_ms = 2, jitter_frac = 0, output_tokens = 8 }}
# some requests fail, so error paths (error_detail, logs) are exercised too
faults = {{ error_rate = 0.2, error_status = 401, midstream_disconnect_rate = 0.1 }}
""")
    profile = tmp_path / "secret.toml"
    profile.write_text(f"""
name = "secrets"
duration_s = 1
thresholds = ["rate(errors) < 50%"]
[target]
fleet = "{fleet}"
policy = "{POLICY}"
[target.endpoints.ext]
base_url = "http://127.0.0.1:{port}"
api_key_env = "{KEY_ENV}"
cloud = "azure"
[validity]
max_schedule_lag_p99_ms = 5000
max_event_loop_lag_p99_ms = 5000
[[scenarios]]
name = "chat"
arrival = {{ process = "constant", rate_rps = 20 }}
routes = [{{ endpoint = "ext", deployment = "gpt-4o" }}]
""")
    return profile


@pytest.mark.slow
def test_the_key_appears_in_no_output(tmp_path: Path) -> None:
    """The key from the environment is in no file of the run directory (Parquet contents included), not in
    what `harness run` or `harness report` print, and not in the mock ledger."""
    secret = f"sk-secret-{uuid.uuid4().hex}"
    profile = secret_profile(tmp_path)
    results = tmp_path / "r"
    run = run_cli("run", str(profile), "--results", str(results), "--no-progress", env={KEY_ENV: secret})
    assert run.returncode in (ExitCode.PASS, ExitCode.THRESHOLDS_FAILED), run.stdout + run.stderr
    (run_dir,) = list(results.iterdir())
    report = run_cli("report", str(run_dir), env={KEY_ENV: secret})
    assert report.returncode == 0, report.stdout + report.stderr

    needles = [secret.encode(), secret.encode("utf-16-le"), secret[10:].encode()]
    files = [p for p in run_dir.rglob("*") if p.is_file()]
    names = {p.name for p in files}
    assert {"requests.parquet", "ledger.parquet", "run.log", "summary.json", "summary.md"} <= names
    assert {"report.html", "junit.xml", "profile.resolved.json", "compliance.json"} <= names
    for path in files:
        blob = path.read_bytes()
        assert not any(n in blob for n in needles), path
    for name in ("requests.parquet", "ledger.parquet"):  # compressed: search the decoded values too
        frame = pd.read_parquet(run_dir / name)
        assert len(frame) > 0
        text = frame.astype(str).to_csv()
        assert secret not in text and secret[10:] not in text, name
    for output in (run.stdout, run.stderr, report.stdout, report.stderr):
        assert secret not in output and secret[10:] not in output
    assert KEY_ENV in (run_dir / "profile.resolved.json").read_text()  # the name is recorded, not the value


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("api_key_env", "sk-proj-abc123DEF456ghi789JKL012mno345"),
        ("api_key_env", "0123456789abcdef0123456789abcdef"),
        ("api_key_env", "a1b2c3d4e5f6a7b8c9d0e1f2a3b4c5d6"),
        ("base_url", "https://user:a1b2c3d4e5f6a7b8c9d0@example.com"),
        ("base_url", "https://example.com/?api-key=a1b2c3d4e5f6a7b8c9d0"),
    ],
    ids=["sk-key", "hex-key", "letter-hex-key", "url-userinfo", "url-query"],
)
def test_a_key_pasted_into_the_profile_is_refused_without_echoing_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, field: str, value: str
) -> None:
    """A key written into api_key_env or base_url is refused as bad input; the message does not repeat it."""
    monkeypatch.delenv(value, raising=False)
    base_url = value if field == "base_url" else "https://example.com"
    key_env = value if field == "api_key_env" else KEY_ENV
    monkeypatch.setenv(KEY_ENV, "not-the-secret")
    profile = tmp_path / "p.toml"
    profile.write_text(f"""
name = "pasted"
duration_s = 1
[target]
policy = "{POLICY}"
allow_remote = true
[target.endpoints.ext]
base_url = "{base_url}"
api_key_env = "{key_env}"
[[scenarios]]
name = "chat"
arrival = {{ process = "constant", rate_rps = 1 }}
routes = [{{ endpoint = "ext", deployment = "d" }}]
""")
    with pytest.raises(HarnessError) as info:
        prepare(profile)
    message = info.value.one_line()
    assert info.value.exit_code == ExitCode.INVALID_INPUT
    assert f"target.endpoints.ext.{field}" in message, message
    assert "a1b2c3d4e5f6a7b8c9d0" not in message and "0123456789abcdef0123" not in message, message
    assert "abc123DEF456" not in message, message
