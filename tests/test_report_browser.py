"""report.html and trend.html rendered in headless Debian Chromium: no console errors, every plot drawn.

Playwright (the pip package) drives the system browser at /usr/bin/chromium; it never downloads a
browser of its own. When the browser is missing and we are root (CI), the fixture installs it with
apt once; elsewhere the tests are skipped with the command to run.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from harness.report.trend import write_trend
from tests.test_report import real_runs

CHROMIUM = Path("/usr/bin/chromium")
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
INSTALL_TIMEOUT_S = 1200

# Measured in the page: every inline SVG's rendered box and how many path elements it has.
SVG_BOXES_JS = """() => Array.from(document.querySelectorAll('svg')).map(svg => {
  const box = svg.getBoundingClientRect();
  return {width: box.width, height: box.height, paths: svg.querySelectorAll('path').length,
          id: svg.closest('figure') ? svg.closest('figure').id : ''};
})"""


def _install_chromium() -> None:
    """apt-get install chromium, when it is missing and we may (root); skip otherwise."""
    if CHROMIUM.exists():
        return
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        pytest.skip(f"{CHROMIUM} is missing; install it with: apt-get update && apt-get install -y chromium")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for cmd in (["apt-get", "update"], ["apt-get", "install", "-y", "chromium"]):
        done = subprocess.run(
            cmd, capture_output=True, text=True, timeout=INSTALL_TIMEOUT_S, env=env, check=False
        )
        assert done.returncode == 0, f"{' '.join(cmd)} failed:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}"
    assert CHROMIUM.exists(), "apt installed chromium but /usr/bin/chromium is missing"


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    _install_chromium()
    sync_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright (the package only)")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=ARGS, timeout=60_000)
        try:
            yield b
        finally:
            b.close()


@pytest.fixture(scope="module")
def pages(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from harness.report import write_report

    runs = real_runs(tmp_path_factory)
    for run_dir in runs.values():
        if not (run_dir / "report.html").exists():
            write_report(run_dir)
    results = tmp_path_factory.mktemp("trend")
    for run_dir in runs.values():
        shutil.copytree(run_dir, results / run_dir.name)
    write_trend(results)
    return {
        "smoke": runs["smoke"] / "report.html",
        "misrouted": runs["smoke-misrouted"] / "report.html",
        "trend": results / "trend.html",
    }


def render(browser: Any, page_file: Path) -> tuple[list[dict[str, Any]], list[str], list[str]]:
    """Load a page; return its SVG boxes, the console errors and page errors, and every URL it requested."""
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    problems: list[str] = []
    requested: list[str] = []
    page.on(
        "console",
        lambda m: problems.append(f"console {m.type}: {m.text}") if m.type in ("error", "warning") else None,
    )
    page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
    page.on("requestfailed", lambda r: problems.append(f"request failed: {r.url}"))
    page.on("request", lambda r: requested.append(r.url))
    try:
        page.goto(page_file.as_uri(), wait_until="load", timeout=60_000)
        boxes = page.evaluate(SVG_BOXES_JS)
    finally:
        page.close()
    return boxes, problems, requested


@pytest.mark.timeout(INSTALL_TIMEOUT_S + 300)
@pytest.mark.parametrize("name", ["smoke", "misrouted"])
def test_report_renders_every_plot_without_errors(browser: Any, pages: dict[str, Path], name: str) -> None:
    """The report loads offline with no console or page error; all 9 plots have nonzero size and paths."""
    boxes, problems, requested = render(browser, pages[name])
    assert problems == []
    assert requested == [pages[name].as_uri()], "the report fetched something besides itself"
    assert len(boxes) == 9
    for box in boxes:
        assert box["width"] > 100 and box["height"] > 100, box
        assert box["paths"] > 0, box


@pytest.mark.timeout(INSTALL_TIMEOUT_S + 300)
def test_trend_page_renders_a_chart_per_profile(browser: Any, pages: dict[str, Path]) -> None:
    """trend.html loads with no errors and draws one chart per profile, each with paths."""
    boxes, problems, requested = render(browser, pages["trend"])
    assert problems == [] and requested == [pages["trend"].as_uri()]
    assert len(boxes) == 2
    assert all(b["width"] > 100 and b["height"] > 100 and b["paths"] > 0 for b in boxes)
