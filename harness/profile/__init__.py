"""Profiles, fleets and policies: TOML in, validated models out; the one place that knows the formats."""

from harness.profile.load import (
    LoadedProfile,
    check_remote,
    load_fleet,
    load_policy,
    load_profile,
    profile_json_schema,
    resolve_secret,
)
from harness.profile.models import (
    Client,
    Endpoint,
    Fleet,
    FleetEndpoint,
    Latency,
    Policy,
    Profile,
    Route,
    Rule,
    Scenario,
)

__all__ = [
    "Client",
    "Endpoint",
    "Fleet",
    "FleetEndpoint",
    "Latency",
    "LoadedProfile",
    "Policy",
    "Profile",
    "Route",
    "Rule",
    "Scenario",
    "check_remote",
    "load_fleet",
    "load_policy",
    "load_profile",
    "profile_json_schema",
    "resolve_secret",
]
