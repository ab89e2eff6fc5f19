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
from harness.profile.models import API_DIALECTS, ROUTER_ENDPOINT, Fleet, Policy, Profile

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


def _sub_file(base: Path, target: Any, key: str, default: str | None) -> Path | None:
    value = target.get(key, default) if isinstance(target, dict) else default
    return base / value if isinstance(value, str) else None


def _route_problems(data: dict[str, Any], fleet: Fleet | None) -> list[Problem]:
    """Check route references on the raw data, so they are reported even when other keys are invalid."""
    problems: list[Problem] = []
    known: dict[str, list[str] | None] = {}
    dialects: dict[str, str] = {}
    if fleet is not None:
        known.update({e.name: list(e.deployments) for e in fleet.endpoints})
        dialects.update({e.name: e.dialect for e in fleet.endpoints})
    target = data.get("target")
    router = target.get("router") if isinstance(target, dict) else None
    if isinstance(router, dict):
        known[ROUTER_ENDPOINT] = None  # the router serves whatever the fleet behind it serves
        dialect = router.get("dialect", "azure_openai")
        if isinstance(dialect, str):
            dialects[ROUTER_ENDPOINT] = dialect
    external = target.get("endpoints") if isinstance(target, dict) else None
    for name in external if isinstance(external, dict) else {}:
        if name in known:
            problems.append(
                Problem(f"target.endpoints.{name}", "also defined in the fleet file; rename one of them")
            )
        known[name] = None  # external endpoints accept any deployment name
        spec = external[name]
        dialect = spec.get("dialect", "azure_openai") if isinstance(spec, dict) else None
        if isinstance(dialect, str):
            dialects[name] = dialect
    scenarios = data.get("scenarios")
    for i, scenario in enumerate(scenarios if isinstance(scenarios, list) else []):
        routes = scenario.get("routes") if isinstance(scenario, dict) else None
        api = scenario.get("api", "chat.completions") if isinstance(scenario, dict) else None
        for j, route in enumerate(routes if isinstance(routes, list) else []):
            if not isinstance(route, dict) or not isinstance(route.get("endpoint"), str):
                continue
            key, endpoint = f"scenarios[{i}].routes[{j}]", route["endpoint"]
            if endpoint not in known:
                choices = ", ".join(sorted(known)) or "none defined"
                problems.append(
                    Problem(f"{key}.endpoint", f"unknown endpoint {endpoint!r} (known: {choices})")
                )
                continue
            allowed = API_DIALECTS.get(api) if isinstance(api, str) else None
            dialect = dialects.get(endpoint)
            if allowed is not None and dialect is not None and dialect not in allowed:
                problems.append(
                    Problem(
                        f"{key}.endpoint",
                        f"endpoint {endpoint!r} speaks {dialect}, which cannot serve api {api!r} "
                        f"(route it to a {' or '.join(allowed)} endpoint)",
                    )
                )
            deployments, deployment = known[endpoint], route.get("deployment")
            if deployments is not None and isinstance(deployment, str) and deployment not in deployments:
                problems.append(
                    Problem(
                        f"{key}.deployment",
                        f"endpoint {endpoint!r} has no deployment {deployment!r} "
                        f"(it has: {', '.join(deployments)})",
                    )
                )
    return problems


def load_profile(path: str | Path) -> LoadedProfile:
    """Load a profile, its fleet and its policy, and check the references between them.

    Raises ProfileError listing every problem found: schema problems, problems in the
    referenced fleet and policy files (by key ``target.fleet`` / ``target.policy``) and
    routes that name unknown endpoints or deployments, all at once.
    """
    path = Path(path)
    data = read_toml(path)
    problems: list[Problem] = []
    profile: Profile | None = None
    try:
        profile = Profile.model_validate(data)
    except ValidationError as exc:
        problems.extend(problems_from(exc, data))

    base = path.parent
    target = data.get("target")
    fleet_path = _sub_file(base, target, "fleet", None)
    policy_path = _sub_file(base, target, "policy", "policies/azure-stateless-exclusive.toml")
    fleet: Fleet | None = None
    policy: Policy | None = None
    if fleet_path is not None:
        try:
            fleet = load_fleet(fleet_path)
        except ProfileError as exc:
            problems.append(Problem("target.fleet", exc.message))
    if policy_path is not None:
        try:
            policy = load_policy(policy_path)
        except ProfileError as exc:
            problems.append(Problem("target.policy", exc.message))
    problems.extend(_route_problems(data, fleet))
    if profile is not None and fleet is not None:
        names = [e.name for e in fleet.endpoints]
        for i, event in enumerate(profile.target.events):
            if event.endpoint not in names:
                problems.append(
                    Problem(
                        f"target.events[{i}].endpoint",
                        f"no fleet endpoint {event.endpoint!r} (the fleet has: {', '.join(names)})",
                    )
                )
    if profile is not None:
        for i, scenario in enumerate(profile.scenarios):
            if scenario.trace is not None and not (base / scenario.trace.file).is_file():
                problems.append(
                    Problem(
                        f"scenarios[{i}].trace.file",
                        f"{base / scenario.trace.file} is not a file (relative to the profile file)",
                    )
                )
    if problems or profile is None or policy is None or policy_path is None:
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
