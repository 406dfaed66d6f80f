"""A real browser for the tests: Playwright's sync API driving the system Chromium
(`/usr/bin/chromium`, from `make system-deps`; Playwright's own browser downloads are not used).

Playwright's sync API runs its event loop in a greenlet and leaves that loop marked as the
thread's running loop between calls. Left like that, every later `asyncio.run()` and every
async test of the session fails ("cannot be called from a running event loop"). So the loop
is parked between uses: `Chromium.awake()` marks it running again for the time a test drives
the browser (the `page` fixture does this for the whole test).

`assert_accessible(page, name)` checks the page it is given with axe-core (vendored in
`vendor/axe.min.js`, so nothing is fetched at test time) against the WCAG 2.1 A and AA rules.
"""

from __future__ import annotations

import asyncio
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

from playwright.sync_api import Browser, Page, Playwright, sync_playwright
from playwright.sync_api import Error as PlaywrightError

from coordinator.settings import REPO_ROOT

CHROMIUM = Path("/usr/bin/chromium")
# The network of a test machine may be closed: without the background-networking flags
# Chromium stalls on refused connections (component updates, sync, QUIC probes).
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync"]
VIEWPORT = {"width": 1280, "height": 900}
AXE_SCRIPT = Path(__file__).parent / "vendor" / "axe.min.js"
WCAG_TAGS = ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa"]
# Runs in the page: axe with the WCAG 2.1 A/AA rules only, reduced to what a failure message
# needs (rule id, impact, help text, the first few CSS selectors of the offending nodes, and
# axe's account of the first node, e.g. the contrast ratio it measured).
AXE_RUN = r"""async (tags) => {
  const result = await axe.run(document, {runOnly: {type: "tag", values: tags},
                                          resultTypes: ["violations"]});
  return result.violations.map((v) => ({
    id: v.id, impact: v.impact, help: v.help, count: v.nodes.length,
    targets: v.nodes.slice(0, 3).map((n) => n.target.join(" ")),
    why: (v.nodes[0].failureSummary || "").replace(/\s+/g, " ").slice(0, 300),
  }));
}"""
SESSION_STARTED = datetime.now()  # this module is imported once, as the session starts


def artifacts_dir() -> Path:
    """This test run's artifacts folder: `$LOA_TEST_ARTIFACTS`, else
    `<repo>/.artifacts/<session start, YYYYmmdd-HHMMSS>`."""
    configured = os.environ.get("LOA_TEST_ARTIFACTS")
    if configured:
        return Path(configured)
    return REPO_ROOT / ".artifacts" / SESSION_STARTED.strftime("%Y%m%d-%H%M%S")


def shot(page: Page, name: str) -> Path:
    """Save a full-page PNG screenshot as `<artifacts>/screenshots/<name>.png`; returns its path."""
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", name):
        raise ValueError(f"screenshot name {name!r}: use letters, digits, '-', '_' and '.'")
    path = artifacts_dir() / "screenshots" / f"{name}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(path), full_page=True)
    return path


def axe_violations(page: Page) -> list[dict[str, Any]]:
    """The WCAG 2.1 A/AA violations axe-core finds in `page` as it is now (axe is injected
    into the page if not there yet): each as id, impact, help, count, up to 3 targets and why
    the first one fails. Some pages reload themselves (the inbox, an open incident): if one
    does during the check, the reloaded page is checked instead."""
    for attempt in (1, 2):
        try:
            if not page.evaluate("typeof window.axe !== 'undefined'"):
                page.add_script_tag(path=str(AXE_SCRIPT))
            found: list[dict[str, Any]] = page.evaluate(AXE_RUN, WCAG_TAGS)
            return found
        except PlaywrightError as exc:
            if attempt == 2 or "context was destroyed" not in str(exc):
                raise
            page.wait_for_load_state()
    raise AssertionError("unreachable")


_DRAWN = """(selector) => {
  const node = document.querySelector(selector);
  const text = node.textContent.trim();
  const canvas = document.createElement("canvas");
  canvas.width = 1600; canvas.height = 80;
  const ctx = canvas.getContext("2d");
  const draw = (s) => {
    ctx.clearRect(0, 0, 1600, 80);
    ctx.font = getComputedStyle(node).font;
    ctx.fillText(s, 5, 60);
    return ctx.getImageData(0, 0, 1600, 80).data.join();
  };
  return draw(text) !== draw("\\u0378".repeat([...text].length));
}"""


def assert_drawn(page: Page, selector: str) -> None:
    """The text of `selector` is drawn in a font that has its letters: the browser draws
    letters no font has as the same empty box as an unassigned code point (U+0378)."""
    assert page.evaluate(_DRAWN, selector), f"{selector}: drawn as empty boxes (no font)"


def assert_accessible(page: Page, name: str) -> None:
    """Fail, listing each violation, unless axe-core finds `page` free of WCAG 2.1 A/AA
    violations; `name` says which page it is in the message."""
    violations = axe_violations(page)
    lines = [f"{v['id']} ({v['impact']}, {v['count']} node(s)): {v['help']}; "
             f"e.g. {', '.join(v['targets'])}: {v['why']}" for v in violations]
    assert not violations, (f"{name} ({page.url}) has {len(violations)} accessibility "
                            "violation(s):\n  " + "\n  ".join(lines))


class Chromium:
    """Playwright and the system Chromium, started once (for a test session)."""

    def __init__(self, executable: Path = CHROMIUM) -> None:
        if not executable.exists():
            raise FileNotFoundError(
                f"{executable} is missing: the browser tests need the system Chromium; "
                "run `make system-deps` (it apt-installs `chromium`)")
        if asyncio._get_running_loop() is not None:
            raise RuntimeError("the sync browser cannot be started inside a running event loop")
        self.playwright: Playwright = sync_playwright().start()
        try:
            self.browser: Browser = self.playwright.chromium.launch(
                executable_path=str(executable), headless=True, args=CHROMIUM_ARGS)
        except BaseException:
            self.playwright.stop()
            raise
        self.loop = asyncio.get_running_loop()  # Playwright's: marked running after each call
        asyncio._set_running_loop(None)  # parked until `awake()`

    @contextmanager
    def awake(self) -> Iterator[Browser]:
        """The browser, usable (with Playwright's loop marked running) inside the block."""
        previous = asyncio._get_running_loop()
        if previous not in (None, self.loop):
            raise RuntimeError("the sync browser cannot be driven from an async test")
        asyncio._set_running_loop(self.loop)
        try:
            yield self.browser
        finally:
            asyncio._set_running_loop(previous)

    @contextmanager
    def page(self, **context_options: Any) -> Iterator[Page]:
        """A page in a fresh browser context (1280x900 unless told), closed on exit."""
        with self.awake() as browser:
            context = browser.new_context(**{"viewport": VIEWPORT, **context_options})
            try:
                yield context.new_page()
            finally:
                context.close()

    def close(self) -> None:
        """Close the browser and stop Playwright (which leaves no loop marked running)."""
        with self.awake() as browser:
            try:
                browser.close()
            finally:
                self.playwright.stop()
