"""Profile, fleet and policy validation: every problem at once, with key paths; exit 2."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from harness.errors import ProfileError, RemoteTargetError, SecretMissingError
from harness.profile import check_remote, load_profile, resolve_secret
from tests.conftest import PROFILES, run_cli

BAD_PROFILE = """
name = "bad"
duration_s = -5
durration_s = 3
[target]
fleet = "{fleet}"
policy = "{policy}"
[client]
connections = 0
[[scenarios]]
name = "chat"
max_tokens = 0
arrival = {{ process = "poisson", rate_rps = 0, burst = 2 }}
routes = [{{ endpoint = "nowhere", deployment = "gpt-4o" }}]
"""


def write(tmp_path: Path, text: str, name: str = "p.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def bad_profile(tmp_path: Path) -> Path:
    return write(
        tmp_path,
        BAD_PROFILE.format(
            fleet=PROFILES / "fleets/default.toml",
            policy=PROFILES / "policies/azure-stateless-exclusive.toml",
        ),
    )


def test_shipped_profiles_validate() -> None:
    """The smoke profiles, their fleet and the default policy load and cross-check cleanly."""
    for name in ("smoke.toml", "smoke-misrouted.toml"):
        loaded = load_profile(PROFILES / name)
        assert loaded.fleet is not None
        assert loaded.policy.name == "azure-stateless-exclusive"


def test_every_problem_reported_with_its_key_path(tmp_path: Path) -> None:
    """All schema problems come back together, each named by its dotted key path."""
    with pytest.raises(ProfileError) as info:
        load_profile(bad_profile(tmp_path))
    paths = {p.path for p in info.value.problems}
    assert {
        "duration_s",
        "durration_s",
        "client.connections",
        "scenarios[0].max_tokens",
        "scenarios[0].arrival.rate_rps",
        "scenarios[0].arrival.burst",
    } <= paths
    assert all("poisson" not in p for p in paths), "union tags are not user keys"


def test_unknown_endpoint_and_deployment_named(tmp_path: Path) -> None:
    """Routes that name an endpoint or deployment the fleet lacks are errors listing the choices."""
    text = (PROFILES / "smoke.toml").read_text()
    text = text.replace('"fleets/default.toml"', f'"{PROFILES / "fleets/default.toml"}"')
    text = text.replace(
        '"policies/azure-stateless-exclusive.toml"',
        f'"{PROFILES / "policies/azure-stateless-exclusive.toml"}"',
    )
    text = text.replace(
        'endpoint = "azure-eastus", deployment = "gpt-4o"', 'endpoint = "azure-eastus", deployment = "gpt-5"'
    )
    text = text.replace('endpoint = "azure-swedencentral"', 'endpoint = "azure-mars"')
    with pytest.raises(ProfileError) as info:
        load_profile(write(tmp_path, text))
    msgs = {p.path: p.message for p in info.value.problems}
    assert "gpt-5" in msgs["scenarios[0].routes[0].deployment"]
    assert "azure-mars" in msgs["scenarios[0].routes[1].endpoint"]
    assert "azure-eastus" in msgs["scenarios[0].routes[1].endpoint"]


def test_invalid_toml_is_one_line_error(tmp_path: Path) -> None:
    """A TOML syntax error names the file and the position."""
    with pytest.raises(ProfileError) as info:
        load_profile(write(tmp_path, "name = [\n"))
    assert "not valid TOML" in info.value.one_line()
    assert "\n" not in info.value.one_line()


def test_remote_target_needs_opt_in(tmp_path: Path) -> None:
    """An endpoint outside loopback is refused unless allow_remote is set."""
    policy = PROFILES / "policies/azure-stateless-exclusive.toml"
    text = f"""
name = "remote"
duration_s = 1
[target]
policy = "{policy}"
[target.endpoints.gw]
base_url = "https://gateway.example.com"
api_key_env = "GW_KEY"
[[scenarios]]
name = "chat"
arrival = {{ process = "constant", rate_rps = 1 }}
routes = [{{ endpoint = "gw", deployment = "gpt-4o" }}]
"""
    loaded = load_profile(write(tmp_path, text))
    with pytest.raises(RemoteTargetError, match="allow_remote"):
        check_remote(loaded)
    loaded = load_profile(write(tmp_path, text.replace("[target]\n", "[target]\nallow_remote = true\n")))
    check_remote(loaded)


def test_api_key_env_must_be_a_variable_name(tmp_path: Path) -> None:
    """A key pasted where the variable name belongs is rejected, so secrets never live in profiles."""
    policy = PROFILES / "policies/azure-stateless-exclusive.toml"
    text = f"""
name = "k"
duration_s = 1
[target]
policy = "{policy}"
[target.endpoints.gw]
base_url = "http://127.0.0.1:9"
api_key_env = "sk-abc123/secret+value"
[[scenarios]]
name = "chat"
arrival = {{ process = "constant", rate_rps = 1 }}
routes = [{{ endpoint = "gw", deployment = "gpt-4o" }}]
"""
    with pytest.raises(ProfileError) as info:
        load_profile(write(tmp_path, text))
    assert "target.endpoints.gw.api_key_env" in {p.path for p in info.value.problems}


def test_missing_secret_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    """An unset key variable is reported by name with the export command to fix it."""
    monkeypatch.delenv("HARNESS_TEST_UNSET_KEY", raising=False)
    with pytest.raises(SecretMissingError, match="export HARNESS_TEST_UNSET_KEY"):
        resolve_secret("HARNESS_TEST_UNSET_KEY", "p.toml")


def test_cli_validate_invalid_exits_2_naming_every_bad_key(tmp_path: Path) -> None:
    """`harness profiles validate` on a bad profile exits 2 and names every bad key on one line."""
    result = run_cli("profiles", "validate", str(bad_profile(tmp_path)))
    assert result.returncode == 2
    message = result.stderr.strip()
    assert len(message.splitlines()) == 1, message
    for key in (
        "duration_s",
        "durration_s",
        "client.connections",
        "scenarios[0].max_tokens",
        "scenarios[0].arrival.rate_rps",
        "scenarios[0].arrival.burst",
        "scenarios[0].routes[0].endpoint",
    ):
        assert key in message


def test_cli_run_invalid_profile_starts_nothing(tmp_path: Path) -> None:
    """`harness run` on an invalid profile exits 2 and creates no run directory."""
    results = tmp_path / "results"
    result = run_cli("run", str(bad_profile(tmp_path)), "--results", str(results))
    assert result.returncode == 2
    assert not results.exists() or not any(results.iterdir())


def test_cli_validate_ok_and_schema() -> None:
    """Valid profiles validate with exit 0, and the JSON Schema lists the profile's keys."""
    result = run_cli(
        "profiles", "validate", str(PROFILES / "smoke.toml"), str(PROFILES / "smoke-misrouted.toml")
    )
    assert result.returncode == 0, result.stderr
    schema = json.loads(run_cli("profiles", "schema").stdout)
    assert {"duration_s", "scenarios", "target", "client"} <= set(schema["properties"])


def test_in_flight_cap_cannot_exceed_connections(tmp_path: Path) -> None:
    """max_in_flight above connections is rejected: the excess would queue invisibly in the pool."""
    text = (
        (PROFILES / "smoke.toml")
        .read_text()
        .replace("connections = 256", "connections = 8\nmax_in_flight = 9")
    )
    text = text.replace('"fleets/default.toml"', f'"{PROFILES / "fleets/default.toml"}"')
    text = text.replace(
        '"policies/azure-stateless-exclusive.toml"',
        f'"{PROFILES / "policies/azure-stateless-exclusive.toml"}"',
    )
    with pytest.raises(ProfileError) as info:
        load_profile(write(tmp_path, text))
    assert any(p.path == "client" and "exceeds connections" in p.message for p in info.value.problems)
