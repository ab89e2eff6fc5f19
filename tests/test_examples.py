"""The CI and Kubernetes examples and the README: their YAML has the structure the schedulers
expect, every harness command in them parses against the real CLI, and the cheap ones run."""

from __future__ import annotations

import glob
import re
import shlex
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import typer
import typer.main
import yaml
from typer.testing import CliRunner

from harness.cli import app
from harness.errors import SecretMissingError
from harness.runner import prepare
from tests.conftest import ROOT, run_cli

EXAMPLES = ROOT / "examples"
# typer vendors its own click: its UsageError is what a bad command line raises
USAGE_ERROR: type[Exception] = next(c for c in typer.BadParameter.__mro__ if c.__name__ == "UsageError")
CRON_FIELD = re.compile(r"^(\*|\d+(-\d+)?)(/\d+)?(,(\*|\d+(-\d+)?)(/\d+)?)*$")


def harness_commands(text: str) -> list[list[str]]:
    """Every ``harness ...`` (or ``.venv/bin/harness ...``) command in shell text, as argv after
    the program name; shell operators (&&, ||, ;, |, &) and trailing comments end a command."""
    commands = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        lexer = shlex.shlex(line, posix=True, punctuation_chars="&|;")
        lexer.whitespace_split = True
        lexer.commenters = "#"
        words: list[str] = []
        for token in [*lexer, ";"]:
            if token in ("&&", "||", ";", "|", "&", ";;"):
                if words and Path(words[0]).name == "harness":
                    commands.append(words[1:])
                words = []
            else:
                words.append(token)
    return commands


def check_parses(argv: list[str]) -> Any:
    """Parse ``argv`` with the real CLI's (click) commands without running anything; raise
    USAGE_ERROR (unknown command or option, missing argument, bad value) when it does not."""
    command: Any = typer.main.get_command(app)
    rest, path = list(argv), ["harness"]
    while hasattr(command, "list_commands"):  # a group
        assert rest, f"{' '.join(path)} needs a subcommand"
        sub = command.get_command(typer.Context(command, info_name=path[-1]), rest[0])
        if sub is None:
            raise USAGE_ERROR(f"no such command {rest[0]!r} in {' '.join(path)}")
        path.append(rest.pop(0))
        command = sub
    if "--help" in rest:
        return command
    command.make_context(" ".join(path), rest)
    return command


def test_command_parser_catches_mistakes() -> None:
    """The checker itself rejects unknown commands and options and accepts real ones."""
    assert harness_commands("a && .venv/bin/harness run p.toml --results r || status=$?  # note") == [
        ["run", "p.toml", "--results", "r"]
    ]
    check_parses(["run", "p.toml", "--prometheus-port", "9464", "--no-progress"])
    check_parses(["profiles", "validate", "a.toml", "b.toml"])
    for bad in (
        ["runn", "p.toml"],
        ["run", "p.toml", "--frobnicate"],
        ["run"],
        ["run", "p", "--prometheus-port", "x"],
    ):
        with pytest.raises(USAGE_ERROR):
            check_parses(bad)


# --------------------------------------------------------------------------- GitHub Actions


def load_yaml(path: Path) -> list[Any]:
    return [doc for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")) if doc is not None]


def test_github_actions_workflow_structure() -> None:
    """The workflow has triggers, one job with a runner, a timeout and steps that each use an
    action or run a script; it runs the gate, publishes junit.xml and summary.md even on failure."""
    (workflow,) = load_yaml(EXAMPLES / "ci" / "github-actions.yml")
    triggers = workflow.get("on", workflow.get(True))  # YAML 1.1 reads a bare `on` as true
    assert isinstance(triggers, dict) and "pull_request" in triggers
    (job,) = workflow["jobs"].values()
    assert job["runs-on"] and isinstance(job["timeout-minutes"], int)
    steps = job["steps"]
    assert all(("uses" in s) != ("run" in s) for s in steps), "each step uses an action or runs a script"
    assert all(re.match(r"^[\w.-]+/[\w.-]+@v\d+$", s["uses"]) for s in steps if "uses" in s)
    runs = "\n".join(s["run"] for s in steps if "run" in s)
    commands = harness_commands(runs)
    assert ["run", "examples/ci/release-gate.toml", "--results", "results", "--no-progress"] in commands
    for argv in commands:
        check_parses(argv)
    after = steps[next(i for i, s in enumerate(steps) if "harness run" in s.get("run", "")) + 1 :]
    published = " ".join(str(s.get("with", {}).get("report_paths", "")) + s.get("run", "") for s in after)
    assert "junit.xml" in published and "summary.md" in published
    assert all(s.get("if") == "always()" for s in after), "results are published when the gate fails too"
    assert "${{ secrets." in str(job.get("env", {})), "keys come from the CI's secret store"


# --------------------------------------------------------------------------- Kubernetes


def test_kubernetes_cronjob_structure() -> None:
    """A PVC and a CronJob whose pod mounts that claim where --results writes, runs one job at a
    time, never restarts a failed gate, and runs only harness commands that parse."""
    docs = load_yaml(EXAMPLES / "k8s" / "nightly-cronjob.yaml")
    by_kind = {d["kind"]: d for d in docs}
    assert set(by_kind) == {"PersistentVolumeClaim", "CronJob"}
    pvc, cron = by_kind["PersistentVolumeClaim"], by_kind["CronJob"]
    assert pvc["apiVersion"] == "v1" and pvc["spec"]["resources"]["requests"]["storage"]
    assert cron["apiVersion"] == "batch/v1"
    spec = cron["spec"]
    fields = spec["schedule"].split()
    assert len(fields) == 5 and all(CRON_FIELD.match(f) for f in fields)
    assert spec["concurrencyPolicy"] == "Forbid"
    job = spec["jobTemplate"]["spec"]
    assert job["backoffLimit"] == 0
    pod = job["template"]["spec"]
    assert pod["restartPolicy"] in ("Never", "OnFailure")
    (container,) = pod["containers"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    (name,) = [n for n, v in volumes.items() if v.get("persistentVolumeClaim")]
    assert volumes[name]["persistentVolumeClaim"]["claimName"] == pvc["metadata"]["name"]
    script = "\n".join([*container.get("command", []), *container.get("args", [])])
    commands = harness_commands(script)
    run = next(c for c in commands if c[0] == "run")
    trend = next(c for c in commands if c[0] == "trend")
    results = run[run.index("--results") + 1]
    assert results.startswith(mounts[name]) and trend[1] == results, (
        "runs and the trend index share the volume"
    )
    assert (ROOT / run[1]).is_file()
    for argv in commands:
        check_parses(argv)
    assert all("value" not in e for e in container.get("env", [])), "no literal secrets in the manifest"


def invoke(argv: list[str], monkeypatch: pytest.MonkeyPatch) -> Any:
    """Run the real CLI in-process from the repository root, as the shell would (globs expanded)."""
    monkeypatch.chdir(ROOT)
    monkeypatch.setenv("GATEWAY_API_KEY", "example-key")
    expanded = [w for a in argv for w in (sorted(glob.glob(a)) if "*" in a else [a])]
    return CliRunner().invoke(app, expanded)


def test_example_profiles_validate(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every example profile passes `harness profiles validate` (the gateway's key variable set)."""
    profiles = sorted(str(p.relative_to(ROOT)) for p in EXAMPLES.rglob("*.toml") if "stand-in" not in p.name)
    result = invoke(["profiles", "validate", *profiles], monkeypatch)
    assert result.exit_code == 0, result.output
    assert result.output.count(": ok (") == len(profiles)


# --------------------------------------------------------------------------- README


def readme_commands() -> list[list[str]]:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```(?:sh|bash|shell)\n(.*?)```", text, re.S)
    return [argv for block in blocks for argv in harness_commands(block)]


def test_every_readme_command_parses() -> None:
    """Every harness command shown in the README parses against the real CLI (placeholders are paths)."""
    commands = readme_commands()
    assert len(commands) >= 15
    shown = {argv[0] for argv in commands}
    assert {"run", "mock", "gate", "report", "compare", "trend", "profiles", "capacity"} <= shown
    for argv in commands:
        check_parses(argv)


def test_cheap_readme_commands_run(monkeypatch: pytest.MonkeyPatch) -> None:
    """The README's cheap commands (validation, schema, help) run and exit 0."""
    cheap = [
        a
        for a in readme_commands()
        if a[:2] in (["profiles", "validate"], ["profiles", "schema"]) or "--help" in a
    ]
    assert cheap
    for argv in cheap:
        result = invoke(argv, monkeypatch)
        assert result.exit_code == 0, (argv, result.output)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.slow
def test_readme_gateway_walkthrough(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The README's own-gateway steps work: a stand-in gateway that verifies the api-key header,
    then `harness run` of the gateway profile with the key in the environment (port made free)."""
    port = free_port()
    real = EXAMPLES / "real"
    fleet = tmp_path / "stand-in-gateway.toml"
    fleet.write_text((real / "stand-in-gateway.toml").read_text().replace("port = 8080", f"port = {port}"))
    profile = tmp_path / "gateway.toml"
    text = (real / "gateway.toml").read_text().replace("127.0.0.1:8080", f"127.0.0.1:{port}")
    text = text.replace("../../profiles/", f"{(ROOT / 'profiles').as_posix()}/")
    profile.write_text(text)
    monkeypatch.delenv("GATEWAY_API_KEY", raising=False)
    with pytest.raises(SecretMissingError, match="GATEWAY_API_KEY"):
        prepare(profile)  # no key in the environment: nothing starts
    mock = subprocess.Popen(
        [sys.executable, "-m", "harness", "mock", "--fleet", str(fleet)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert mock.stdout is not None
        ready = mock.stdout.readline()  # one JSON line per endpoint once it listens
        assert f":{port}" in ready, mock.stderr.read() if mock.poll() is not None else ready
        result = run_cli(
            "run",
            str(profile),
            "--duration-s",
            "2",
            "--results",
            str(tmp_path / "r"),
            "--no-progress",
            env={"GATEWAY_API_KEY": "a-real-looking-key-123"},
        )
        # PASS, or HARNESS_BOUND (3) when a loaded machine delays the schedule: auth is the point here
        assert result.returncode in (0, 3), result.stdout + result.stderr
        counts = re.search(r"planned (\d+)\s+ok (\d+)\s+error 0\b", result.stdout)
        assert counts is not None and counts.group(1) == counts.group(2) != "0", result.stdout
        run_dir = next((tmp_path / "r").iterdir())
        for path in run_dir.rglob("*"):
            if path.is_file() and path.suffix in (".json", ".toml", ".log", ".md", ".xml", ".html"):
                assert "a-real-looking-key-123" not in path.read_text(errors="replace"), path
    finally:
        mock.terminate()
        mock.wait(timeout=10)
