"""Driving the app in headless Chromium as a user would, and timing each step from the user's
action until its result is on screen: open a run folder, the Map's first draw, recolouring, a
box or lasso selection until the selection panel shows it, any other page until it is drawn and
idle. Shared by ``bench/app_scale.py`` and ``bench/scatter_choice.py --app``; the scatter's
helpers (its frame, tools, drags, the geometric truth of a shape) are those of the browser
tests, ``tests/browser/map_scatter.py``.

Times are wall-clock milliseconds of one clock: Python's ``time.time()`` when the user acts and
the page's ``Date.now()`` when the result is drawn (the same machine). The scatter stamps each
frame it draws (``stats.draws[].done``, after the frame was handed to the compositor); a page
counts as drawn when its title is shown, Streamlit runs no script, nothing on it is stale, every
Plotly chart has its traces and every scatter has drawn its last render, and it stays so for
``STABLE_MS``: the time is when that steady state began.
"""

from __future__ import annotations

import re
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import psutil

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from tests.app_server import running_app  # noqa: E402
from tests.browser.map_scatter import (SCATTER, canvas_box, console_errors, drag, drag_circle, inside,  # noqa: E402
                                       last_shape, open_run_folder, root, use_tool)

__all__ = ["CHROMIUM", "CHROMIUM_ARGS", "AppDriver", "PageError", "app_server", "chromium_pid", "chromium_rss_mb", "launch",
           "run_points"]

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage"]
VIEWPORT = {"width": 1500, "height": 1000}
STABLE_MS = 1000

# Resolves with the page clock (ms) at which the page became drawn and idle, once it has stayed so
# for stableMs; null after timeoutMs.
_SETTLED = r"""async ({title, drawn, stableMs, timeoutMs}) => {
  const ready = () => {
    if (![...document.querySelectorAll('h1')].some((h) => h.textContent.trim() === title)) return false;
    if (document.querySelector('[data-testid=stStatusWidget], [data-stale=true], [data-testid=stSpinner]')) return false;
    const failed = document.querySelector('[data-testid=stException]:not([data-stale=true] *)');
    if (failed) throw new Error(failed.innerText.slice(0, 400));
    for (const plot of document.querySelectorAll('.js-plotly-plot')) if (!(plot._fullData?.length > 0)) return false;
    const frames = [...document.querySelectorAll("iframe[title='ui.scatter.scatter']")];
    if (drawn !== null && !frames.length) return false;
    for (const frame of frames) {
      const view = frame.contentWindow?.scatterView;
      const root = frame.contentDocument?.getElementById('root');
      if (!view || !root || !root.dataset.drawn || root.dataset.renders !== String(view.stats.renders)) return false;
      if (drawn !== null && root.dataset.drawn !== String(drawn)) return false;
    }
    return true;
  };
  const deadline = Date.now() + timeoutMs;
  let since = null;
  while (Date.now() < deadline) {
    const now = Date.now();
    let drawn;
    try { drawn = ready(); } catch (error) { return { error: error.message }; }
    if (drawn) {
      if (since === null) since = now;
      if (now - since >= stableMs) return since;
    } else since = null;
    await new Promise((resolve) => setTimeout(resolve, 15));
  }
  return null;
}"""

# Records the page clock of every change of the selection panel's heading.
_WATCH_SELECTION = r"""() => {
  window.selectionHeadings = [];
  const heading = () => [...document.querySelectorAll('h3')].map((h) => h.innerText)
    .find((text) => /^Selection · [\d,]+ examples/.test(text)) || null;
  let last = heading();
  if (window.selectionObserver) window.selectionObserver.disconnect();
  window.selectionObserver = new MutationObserver(() => {
    const now = heading();
    if (now !== last) { last = now; window.selectionHeadings.push([Date.now(), now]); }
  });
  window.selectionObserver.observe(document.body, {subtree: true, childList: true, characterData: true});
}"""


class PageError(RuntimeError):
    """A page of the app shows an exception instead of its content."""


def now_ms() -> float:
    return time.time() * 1000


def step(message: str) -> None:
    print(f"  {time.strftime('%H:%M:%S')} {message}", file=sys.stderr, flush=True)


def chromium_rss_mb(browser_pid: int | None) -> float | None:
    """Resident memory of every Chromium process (the browser, renderers, the GPU process)."""
    if browser_pid is None:
        return None
    try:
        top = psutil.Process(browser_pid)
        processes = [top, *top.children(recursive=True)]
    except psutil.Error:
        return None
    total = 0
    for process in processes:
        try:
            total += process.memory_info().rss
        except psutil.Error:
            pass
    return round(total / 2**20, 1)


def chromium_pid() -> int | None:
    """The newest Chromium browser process started by this one (Playwright's launch)."""
    candidates = [p for p in psutil.Process().children(recursive=True) if "chromium" in p.name().lower()
                  and not any(a.startswith("--type=") for a in p.cmdline())]
    return max(candidates, key=lambda p: p.create_time()).pid if candidates else None


def launch(playwright):
    """Debian's Chromium, headless, software WebGL (never a downloaded browser)."""
    return playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)


@contextmanager
def app_server(workspace: Path, log_dir: Path | None = None) -> Iterator[str]:
    """The app on a free loopback port with ``workspace`` as its workspace; yields its URL."""
    with running_app(Path(log_dir or workspace), {"CARTOGRAPHER_WORKSPACE": str(workspace)}) as app:
        yield app.url


def _count(text: str) -> int:
    return int(re.search(r"([\d,]+)", text).group(1).replace(",", ""))


@dataclass
class AppDriver:
    """One browser page on the app, with the steps a user takes and their timings."""

    page: object
    timeout_s: float = 600.0
    errors: list[str] = field(default_factory=list)
    received: list[int] = field(default_factory=list)

    @classmethod
    def open(cls, browser, url: str, timeout_s: float = 600.0) -> AppDriver:
        page = browser.new_context(viewport=VIEWPORT).new_page()
        page.set_default_timeout(timeout_s * 1000)
        driver = cls(page, timeout_s)
        driver.errors = console_errors(page)
        page.on("pageerror", lambda error: driver.errors.append(str(error)))
        page.on("websocket", lambda socket: socket.on("framereceived",
                                                      lambda payload: driver.received.append(len(payload))))
        page.goto(url)
        page.wait_for_selector("[data-testid=stApp]")
        return driver

    @property
    def timeout_ms(self) -> float:
        return self.timeout_s * 1000

    def settled(self, title: str, drawn: int | None = None) -> float:
        """Page clock (ms) when the page titled ``title`` became drawn and idle (see the module);
        with ``drawn``, every scatter on it must have drawn that many points."""
        at = self.page.evaluate(_SETTLED, {"title": title, "drawn": drawn, "stableMs": STABLE_MS,
                                           "timeoutMs": self.timeout_ms})
        if at is None:
            raise TimeoutError(f"the {title} page was not drawn and idle within {self.timeout_s:.0f} s")
        if isinstance(at, dict):
            raise PageError(f"the {title} page shows an exception: {at['error']}")
        return at

    def view_stats(self) -> dict:
        return root(self.page).evaluate("() => window.scatterView.stats")

    def nav(self, title: str) -> None:
        self.page.get_by_test_id("stSidebarNav").get_by_text(title, exact=True).click()

    # ------------------------------------------------------------------ steps

    def open_run(self, run: Path) -> dict:
        """Sidebar → Dataset → "Open a file or folder…" → the run folder, until the Overview of
        its run is drawn and idle (from choosing the Dataset box: typing the path included)."""
        page = self.page
        started = now_ms()
        open_run_folder(page, run, timeout=self.timeout_ms)
        title = page.locator("h1").first.text_content().strip()
        return {"open_run_s": round((self.settled(title) - started) / 1000, 2)}

    def open_map(self, n: int) -> dict:
        """A click on *Map* in the sidebar until every point is on screen and the page is idle."""
        self.received.clear()
        clicked = now_ms()
        self.nav("Map")
        settled = self.settled("Map", drawn=n)
        stats = self.view_stats()
        first = stats["draws"][0]
        return {
            "map_draw_s": round((first["done"] - clicked) / 1000, 2),
            "map_settled_s": round((settled - clicked) / 1000, 2),
            "map_points_drawn": int(root(self.page).get_attribute("data-drawn")),
            # from the click: the scatter's iframe starts loading, its script runs, the first
            # render message comes, the first frame is on screen (ms)
            "map_timeline_ms": {"iframe_navigation": round(stats["timeOrigin"] - clicked),
                                "script": round(stats["started"] - clicked),
                                "first_render": round(first["received"] - clicked),
                                "first_frame": round(first["done"] - clicked)},
            "map_websocket_bytes": sum(self.received),
            "map_fetched": stats["fetches"],
        }

    def recolour(self, column: str, *, menu: str = "map") -> dict:
        """Choose ``column`` to colour by until the scatter has drawn the new colours: in the map's
        own colour menu (``menu="map"``: drawn in the browser, no rerun first), or in the page's
        "Colour by" (``menu="page"``: the server reruns and sends the colours)."""
        page = self.page
        if menu == "map":
            choice = page.frame_locator(SCATTER).first.locator(".legend .colour-menu")
            choice.wait_for()

            def choose() -> None:
                choice.select_option(column)
        else:
            page.locator("[data-testid=stSelectbox]").filter(has_text="Colour by").first.click()
            page.keyboard.type(column)  # the option list is virtualised: filter it
            option = page.get_by_role("option", name=column, exact=True)
            option.wait_for()
            choose = option.click
        self.received.clear()
        before = len(self.view_stats()["fetches"])
        draws_before = len(self.view_stats()["draws"])
        clicked = now_ms()
        choose()
        page.wait_for_function(
            "([frame, column, count]) => { const f = document.querySelector(frame);"
            " const v = f && f.contentWindow.scatterView; const r = f && f.contentDocument.getElementById('root');"
            " return v && r.dataset.colour === column && v.stats.draws.length > count; }",
            arg=[SCATTER, column, draws_before], timeout=self.timeout_ms)
        settled = self.settled("Map")
        stats = self.view_stats()
        recoloured = [d for d in stats["draws"][draws_before:] if d["colour"]][-1]
        return {"recolour_s": round((recoloured["done"] - clicked) / 1000, 2), "recolour_menu": menu,
                "recolour_settled_s": round((settled - clicked) / 1000, 2),
                # from the choice: the render message came, its colours were at hand, regl-scatterplot
                # had drawn them, the page had put them on screen (ms)
                "recolour_timeline_ms": {"render": round(recoloured["received"] - clicked),
                                         "fetched": round(recoloured.get("fetched", recoloured["received"]) - clicked),
                                         "drawn": round(recoloured.get("drawn", recoloured["done"]) - clicked),
                                         "frame": round(recoloured["done"] - clicked),
                                         "apply_ms": recoloured["ms"]},
                "recolour_websocket_bytes": sum(self.received),
                "recolour_fetched": stats["fetches"][before:]}

    def _select(self, name: str, points: pd.DataFrame, gesture) -> dict:
        """Watch the selection panel, make the ``gesture`` (a callable that drags and returns the
        page clock of the mouse release), and wait until the panel shows the rows inside the shape
        by geometry; the time runs from the release."""
        page = self.page
        page.evaluate(_WATCH_SELECTION)
        self.received.clear()
        before = len(self.view_stats()["fetches"])
        pressed, released = gesture()
        truth = int(inside(points, last_shape(page)).sum())
        heading = page.get_by_text(f"Selection · {truth:,} examples", exact=True)
        try:
            heading.wait_for(timeout=self.timeout_ms)
        except Exception as exc:  # the panel shows another count (or none): say which
            shown = page.get_by_text(re.compile(r"Selection · [\d,]+ examples")).all_inner_texts()
            raise AssertionError(f"{name}: {truth:,} points inside the shape by geometry, the panel shows {shown}") from exc
        changes = page.evaluate("() => window.selectionHeadings")
        shown_at = next(at for at, text in changes if text and _count(text) == truth)
        settled = self.settled("Map")
        sent = self.view_stats()["selections"][-1]["sent"]
        return {f"{name}_select_s": round((shown_at - released) / 1000, 2),
                f"{name}_select_with_drag_s": round((shown_at - pressed) / 1000, 2),
                f"{name}_selected": _count(heading.inner_text()),
                f"{name}_inside_by_geometry": truth,
                # from the release: the rows sent to the server, the panel shows them, the page idle (ms)
                f"{name}_select_timeline_ms": {"sent": round(sent - released), "panel": round(shown_at - released),
                                               "settled": round(settled - released)},
                f"{name}_select_websocket_bytes": sum(self.received),
                f"{name}_select_fetched": self.view_stats()["fetches"][before:]}

    def box_select(self, points: pd.DataFrame, left=0.35, top=0.35, right=0.6, bottom=0.6) -> dict:
        """A box drag between fractions of the canvas, checked against the points inside it."""
        use_tool(self.page, "box")

        def gesture():
            box = canvas_box(self.page)
            path = [(box["x"] + box["width"] * left, box["y"] + box["height"] * top),
                    (box["x"] + box["width"] * right, box["y"] + box["height"] * bottom)]
            self.page.mouse.move(*path[0])
            pressed = now_ms()
            drag(self.page, path, steps=12)
            return pressed, now_ms()

        return self._select("box", points, gesture)

    def lasso_select(self, points: pd.DataFrame, cx=0.5, cy=0.5, radius=0.2) -> dict:
        """A lasso around a circle (24 vertices), checked against the points inside it."""
        use_tool(self.page, "lasso")

        def gesture():
            pressed = now_ms()
            drag_circle(self.page, cx, cy, radius)
            return pressed, now_ms()

        return self._select("lasso", points, gesture)

    def open_page(self, title: str, drawn: int | None = None) -> float:
        """Seconds from a click on ``title`` in the sidebar until that page is drawn and idle."""
        clicked = now_ms()
        self.nav(title)
        return round((self.settled(title, drawn) - clicked) / 1000, 2)

    def heap_mb(self) -> float:
        """The page's JavaScript heap after a garbage collection (the scatter's frame included:
        it shares the page's process)."""
        cdp = self.page.context.new_cdp_session(self.page)
        cdp.send("HeapProfiler.collectGarbage")
        return round(cdp.send("Runtime.getHeapUsage")["usedSize"] / 2**20, 1)

    def close(self) -> None:
        self.page.context.close()


def run_points(run: Path) -> pd.DataFrame:
    """The run's ids and map coordinates (float32, as the browser gets them)."""
    points = pd.read_parquet(Path(run) / "examples.parquet", columns=["id", "x", "y"])
    points["x"] = points["x"].to_numpy(np.float32)
    points["y"] = points["y"].to_numpy(np.float32)
    return points

