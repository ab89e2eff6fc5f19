"""Read TOML files into validated models, reporting every problem at once with its key path."""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

from pydantic import BaseModel, ValidationError

from harness.errors import Problem, ProfileError, RemoteTargetError, SecretMissingError
from harness.profile.models import Fleet, Policy, Profile

M = TypeVar("M", bound=BaseModel)

LOOPBACK_HOSTS = frozenset({"localhost", "127.0.0.1", "::1", "[::1]"})


def _format_loc(data: Any, loc: tuple[int | str, ...]) -> str:
    """Render a pydantic error location as a TOML key path, skipping union tags.

    Pydantic inserts the discriminator value (``poisson``) into the location of errors inside a
    tagged union; it is not a key the user wrote, so it is left out when absent from the data.
    """
    parts: list[str] = []
    node: Any = data
    for item in loc:
        if isinstance(item, int):
            parts.append(f"[{item}]")
            node = node[item] if isinstance(node, list) and item < len(node) else None
            continue
        if isinstance(node, dict) and item not in node and parts:
            continue  # a union tag or a model-level error, not a key
        parts.append(f".{item}" if parts else str(item))
        node = node.get(item) if isinstance(node, dict) else None
    return "".join(parts)


def _message(err: Any) -> str:
    kind = err.get("type", "")
    if kind == "extra_forbidden":
        return "unknown key (remove it or fix its spelling)"
    if kind == "missing":
        return "required key is missing"
    msg = str(err.get("msg", "invalid value"))
    return msg.removeprefix("Value error, ")


def problems_from(exc: ValidationError, data: Any) -> list[Problem]:
    return [Problem(_format_loc(data, tuple(e["loc"])), _message(e)) for e in exc.errors()]


def read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise ProfileError(str(path), [Problem("", "file not found")]) from None
    except tomllib.TOMLDecodeError as exc:
        raise ProfileError(str(path), [Problem("", f"not valid TOML: {exc}")]) from None
    except OSError as exc:
        raise ProfileError(str(path), [Problem("", f"cannot read: {exc.strerror}")]) from None


def load_model(path: Path, model: type[M]) -> M:
    data = read_toml(path)
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ProfileError(str(path), problems_from(exc, data)) from None


def load_fleet(path: str | Path) -> Fleet:
    return load_model(Path(path), Fleet)


def load_policy(path: str | Path) -> Policy:
    return load_model(Path(path), Policy)


@dataclass(frozen=True, slots=True)
class LoadedProfile:
    """A validated profile with its fleet and policy loaded and cross-checked."""

    path: Path
    profile: Profile
    fleet: Fleet | None
    fleet_path: Path | None
    policy: Policy
    policy_path: Path


def load_profile(path: str | Path) -> LoadedProfile:
    """Load a profile, its fleet and its policy, and check the references between them.

    Raises ProfileError listing every problem found in the profile, or the first file that
    could not be loaded at all.
    """
    path = Path(path)
    data = read_toml(path)
    try:
        profile = Profile.model_validate(data)
    except ValidationError as exc:
        raise ProfileError(str(path), problems_from(exc, data)) from None

    base = path.parent
    fleet_path = (base / profile.target.fleet) if profile.target.fleet else None
    fleet = load_fleet(fleet_path) if fleet_path else None
    policy_path = base / profile.target.policy
    policy = load_policy(policy_path)

    problems: list[Problem] = []
    known: dict[str, list[str] | None] = {}
    if fleet is not None:
        known.update({e.name: list(e.deployments) for e in fleet.endpoints})
    for name in profile.target.endpoints:
        if name in known:
            problems.append(
                Problem(f"target.endpoints.{name}", "also defined in the fleet file; rename one of them")
            )
        known[name] = None  # external endpoints accept any deployment name
    for i, scenario in enumerate(profile.scenarios):
        for j, route in enumerate(scenario.routes):
            key = f"scenarios[{i}].routes[{j}]"
            if route.endpoint not in known:
                choices = ", ".join(sorted(known)) or "none defined"
                problems.append(Problem(f"{key}.endpoint", f"unknown endpoint {route.endpoint!r} (known: {choices})"))
                continue
            deployments = known[route.endpoint]
            if deployments is not None and route.deployment not in deployments:
                problems.append(
                    Problem(
                        f"{key}.deployment",
                        f"endpoint {route.endpoint!r} has no deployment {route.deployment!r} "
                        f"(it has: {', '.join(deployments)})",
                    )
                )
    if problems:
        raise ProfileError(str(path), problems)
    return LoadedProfile(path, profile, fleet, fleet_path, policy, policy_path)


def check_remote(loaded: LoadedProfile) -> None:
    """Refuse external endpoints outside loopback unless the profile opts in."""
    if loaded.profile.target.allow_remote:
        return
    for name, endpoint in loaded.profile.target.endpoints.items():
        host = (urlsplit(endpoint.base_url).hostname or "").lower()
        if host not in LOOPBACK_HOSTS and not host.startswith("127."):
            raise RemoteTargetError(
                f"{loaded.path}: target.endpoints.{name} points at {host}, outside loopback",
                "set `allow_remote = true` under [target] if you mean to load a remote system",
            )


def resolve_secret(env_name: str | None, where: str) -> str | None:
    """Read a secret from the environment; the profile only ever names the variable."""
    if env_name is None:
        return None
    value = os.environ.get(env_name)
    if not value:
        raise SecretMissingError(
            f"{where}: environment variable {env_name} is not set",
            f"export {env_name}=<your key> before running",
        )
    return value


def profile_json_schema() -> dict[str, Any]:
    return Profile.model_json_schema()
