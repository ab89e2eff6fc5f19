"""`harness mock --fleet`: one JSON line per endpoint once ready, clean exit on SIGTERM."""

from __future__ import annotations

import json
import signal
import subprocess
import sys

from tests.conftest import PROFILES, ROOT


def test_harness_mock_prints_endpoints_and_stops_on_sigterm() -> None:
    """The CLI serves the default fleet, announces each endpoint as JSON, and exits 0 on SIGTERM."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "harness", "mock", "--fleet", str(PROFILES / "fleets/default.toml")],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        lines = [json.loads(proc.stdout.readline()) for _ in range(3)]
        assert {line["name"] for line in lines} == {
            "azure-eastus",
            "azure-swedencentral",
            "partner-aws-useast1",
        }
        assert all(line["base_url"].startswith("http://127.0.0.1:") for line in lines)
        assert all(line["admin_url"].startswith("http://127.0.0.1:") for line in lines)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=15) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
