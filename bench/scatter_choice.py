"""Which WebGL scatter draws the Map: plotly.js ``scattergl`` against regl-scatterplot.

Both libraries get the same synthetic map (30 Gaussian clusters in 2-D, a float32 score per
point) as typed arrays, in headless Chromium with software WebGL (SwiftShader), as the app's
browser tests run. For each library and size it measures, in the page:

- **first draw**: from handing the typed arrays to the library until the frame is on screen
  (``newPlot`` / ``draw``, then two animation frames);
- **recolour**: a new float32 colour column, until the frame is on screen (Plotly ``restyle``
  of ``marker.color``; regl-scatterplot ``draw`` with the new value column and the kept
  spatial index);
- **box select**: a real mouse drag over the middle of the plot (Plotly's Box Select tool;
  regl-scatterplot's lasso, Shift + drag, along the same rectangle), wall time from the mouse
  press until the library has reported the selected points and drawn them (the drag itself
  included: both libraries redraw while it moves), and from the release alone;
- **heap**: the page's JavaScript heap after a garbage collection (``Runtime.getHeapUsage``),
  and the resident memory of every Chromium process (software WebGL keeps its buffers in the
  GPU process).

It also records the machine's load average and the CPU share other processes took while it
ran, since the machine may be shared.

Usage::

    (cd ui/scatter/frontend && npm ci)          # regl-scatterplot and esbuild
    .venv/bin/python bench/scatter_choice.py --sizes 100000 1000000

Plotly is the copy that ships with the ``plotly`` Python package (the same plotly.js as
Streamlit's charts). Results: ``bench/results/scatter_choice.json``.

With ``--app RUN [RUN ...]`` it drives the app itself on run folders (``cartographer analyze``
output) with the chosen scatter, as a user would, and records under ``"app"``: opening the run,
the Map's first draw, recolouring by a score, a box selection until the selection panel shows it
(and whether it holds exactly the points inside the box, by the run's coordinates), the
JavaScript heap, and the bytes that reached the browser for each step (websocket messages and
the columns it fetched)::

    .venv/bin/python bench/scatter_choice.py --app /tmp/run100k /tmp/run1m
"""

from __future__ import annotations

import argparse
import functools
import http.server
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import psutil

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench.app_driver import (CHROMIUM_ARGS, AppDriver, app_server, chromium_pid, chromium_rss_mb,  # noqa: E402
                              run_points, step)
from bench.map_speed import machine_info  # noqa: E402

FRONTEND = REPO / "ui" / "scatter" / "frontend"
VIEWPORT = {"width": 1200, "height": 900}
PLOT_SIZE = 800  # px, square

HARNESS = r"""
async function column(name, Type) {
  const buffer = await (await fetch(name)).arrayBuffer();
  return new Type(buffer);
}
const frames = () => new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)));
window.bench = {
  async load() {
    this.x = await column('x.bin', Float32Array);
    this.y = await column('y.bin', Float32Array);
    this.a = await column('a.bin', Float32Array);
    this.b = await column('b.bin', Float32Array);
    this.n = this.x.length;
    return this.n;
  },
};
"""

PLOTLY_PAGE = r"""<!doctype html><html><head><meta charset="utf-8">
<script src="plotly.min.js"></script><script>%(harness)s</script></head>
<body style="margin:0"><div id="plot" style="width:%(size)dpx;height:%(size)dpx"></div>
<script>
Object.assign(window.bench, {
  async draw() {
    const div = document.getElementById('plot');
    const t0 = performance.now();
    await Plotly.newPlot(div, [{type: 'scattergl', mode: 'markers', x: this.x, y: this.y,
      marker: {size: 3, opacity: 0.8, color: this.a, colorscale: 'Viridis', showscale: false},
      hoverinfo: 'none'}],
      {width: %(size)d, height: %(size)d, margin: {l: 0, r: 0, t: 0, b: 0}, dragmode: 'select',
       xaxis: {showticklabels: false}, yaxis: {showticklabels: false}},
      {displayModeBar: false});
    await frames();
    return performance.now() - t0;
  },
  async recolour() {
    const div = document.getElementById('plot');
    const t0 = performance.now();
    await Plotly.restyle(div, {'marker.color': [this.b]});
    await frames();
    return performance.now() - t0;
  },
  armSelect() {
    const div = document.getElementById('plot');
    this.selected = new Promise(resolve => div.once('plotly_selected', async event => {
      await frames();
      resolve(event && event.points ? event.points.length : 0);
    }));
  },
  selectedCount() {  // -1: no selection reported within 5 minutes
    return Promise.race([this.selected, new Promise(r => setTimeout(() => r(-1), 300000))]);
  },
});
</script></body></html>"""

REGL_PAGE = r"""<!doctype html><html><head><meta charset="utf-8">
<script src="regl-bench.js"></script><script>%(harness)s</script></head>
<body style="margin:0"><canvas id="plot" style="width:%(size)dpx;height:%(size)dpx"></canvas>
<script>
function normalise(values, lo, hi) {
  const out = new Float32Array(values.length), scale = 2 / (hi - lo);
  for (let i = 0; i < values.length; i++) out[i] = (values[i] - lo) * scale - 1;
  return out;
}
Object.assign(window.bench, {
  async draw() {
    const canvas = document.getElementById('plot');
    const t0 = performance.now();
    let lo = Infinity, hi = -Infinity;
    for (const v of [this.x, this.y]) for (let i = 0; i < v.length; i++) {
      if (v[i] < lo) lo = v[i]; if (v[i] > hi) hi = v[i];
    }
    this.points = {x: normalise(this.x, lo, hi), y: normalise(this.y, lo, hi), z: this.a};
    const viridis = ['#440154', '#482878', '#3e4989', '#31688e', '#26828e', '#1f9e89',
                     '#35b779', '#6ece58', '#b5de2b', '#fde725'];
    this.plot = ReglBench.createScatterplot({canvas, width: %(size)d, height: %(size)d,
      pointSize: 3, opacity: 0.8, colorBy: 'valueA', pointColor: viridis,
      backgroundColor: '#ffffff', lassoMinDelay: 0, lassoMinDist: 2});
    await this.plot.draw(this.points, {zDataType: 'continuous'});
    await frames();
    this.spatialIndex = this.plot.get('spatialIndex');
    return performance.now() - t0;
  },
  async recolour() {
    const t0 = performance.now();
    this.points = {x: this.points.x, y: this.points.y, z: this.b};
    await this.plot.draw(this.points, {spatialIndex: this.spatialIndex, zDataType: 'continuous'});
    await frames();
    return performance.now() - t0;
  },
  armSelect() {
    this.selected = new Promise(resolve => {
      const off = this.plot.subscribe('select', async ({points}) => {
        this.plot.unsubscribe(off);
        await frames();
        resolve(points.length);
      });
    });
  },
  selectedCount() {  // -1: no selection reported within 5 minutes
    return Promise.race([this.selected, new Promise(r => setTimeout(() => r(-1), 300000))]);
  },
});
</script></body></html>"""

REGL_ENTRY = "import createScatterplot from 'regl-scatterplot';\nwindow.ReglBench = { createScatterplot };\n"


def synthetic_map(n: int, seed: int = 0) -> dict[str, np.ndarray]:
    """A map-like 2-D point cloud: 30 Gaussian clusters of unequal size and spread, plus two
    float32 score columns (one smooth across the map, one random)."""
    rng = np.random.default_rng(seed)
    centres = rng.uniform(-10, 10, size=(30, 2))
    cluster = rng.choice(30, size=n, p=rng.dirichlet(np.full(30, 2.0)))
    spread = rng.uniform(0.3, 1.5, size=30)
    xy = centres[cluster] + rng.standard_normal((n, 2)) * spread[cluster, None]
    return {"x": xy[:, 0].astype(np.float32), "y": xy[:, 1].astype(np.float32),
            "a": (np.hypot(xy[:, 0], xy[:, 1]) / 15).clip(0, 1).astype(np.float32),
            "b": rng.random(n, dtype=np.float32)}


def build_regl_bundle(folder: Path) -> None:
    esbuild = FRONTEND / "node_modules" / ".bin" / "esbuild"
    if not esbuild.exists():
        raise SystemExit(f"{esbuild} is missing: run `npm ci` in {FRONTEND} first.")
    entry = FRONTEND / "regl-bench-entry.mjs"  # inside the package so that imports resolve
    entry.write_text(REGL_ENTRY)
    try:
        subprocess.run([str(esbuild), str(entry), "--bundle", "--minify", "--format=iife",
                        f"--outfile={folder / 'regl-bench.js'}"], check=True, cwd=FRONTEND,
                       capture_output=True)
    finally:
        entry.unlink()


def serve(folder: Path) -> tuple[http.server.ThreadingHTTPServer, str]:
    handler = functools.partial(QuietHandler, directory=str(folder))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}"


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass


def measure(browser, url: str, library: str, repeats: int) -> dict:
    page = browser.new_context(viewport=VIEWPORT).new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.on("console", lambda message: errors.append(message.text)
            if message.type == "error" and "favicon" not in (message.location or {}).get("url", "") else None)
    page.set_default_timeout(600_000)
    page.goto(f"{url}/{library}.html")
    n = page.evaluate("() => bench.load()")
    step(f"{library}: {n:,} points loaded")
    first_draw = page.evaluate("() => bench.draw()")
    step(f"{library}: first draw {first_draw:.0f} ms")
    recolours = [page.evaluate("() => bench.recolour()") for _ in range(repeats)]
    step(f"{library}: recolour {recolours} ms")
    box = page.locator("#plot").bounding_box()
    selects, after_release, counts = [], [], []
    for _ in range(repeats):
        page.evaluate("() => bench.armSelect()")
        x0, y0 = box["x"] + box["width"] * 0.35, box["y"] + box["height"] * 0.35
        x1, y1 = box["x"] + box["width"] * 0.6, box["y"] + box["height"] * 0.6
        page.mouse.move(x0, y0)
        if library == "regl":
            page.keyboard.down("Shift")
        started = time.perf_counter()
        page.mouse.down()
        if library == "regl":  # the lasso along the rectangle's edges
            for x, y in ((x1, y0), (x1, y1), (x0, y1), (x0, y0 + 1)):
                page.mouse.move(x, y, steps=4)
        else:
            page.mouse.move(x1, y1, steps=16)
        released = time.perf_counter()
        page.mouse.up()
        counts.append(page.evaluate("() => bench.selectedCount()"))
        selects.append((time.perf_counter() - started) * 1000)
        after_release.append((time.perf_counter() - released) * 1000)
        step(f"{library}: box select {selects[-1]:.0f} ms ({after_release[-1]:.0f} ms after the release), "
             f"{counts[-1]:,} points")
        if library == "regl":
            page.keyboard.up("Shift")
        page.keyboard.press("Escape")  # clear the selection for the next repeat
        page.mouse.dblclick(box["x"] + 5, box["y"] + 5)
        time.sleep(0.5)
    cdp = page.context.new_cdp_session(page)
    cdp.send("HeapProfiler.collectGarbage")
    heap = cdp.send("Runtime.getHeapUsage")
    rss = chromium_rss_mb(chromium_pid())
    page.context.close()
    return {"n": n, "first_draw_ms": round(first_draw), "recolour_ms": [round(t) for t in recolours],
            "box_select_ms": [round(t) for t in selects],
            "box_select_after_release_ms": [round(t) for t in after_release], "box_selected": counts,
            "js_heap_used_mb": round(heap["usedSize"] / 2**20, 1), "chromium_rss_mb": rss,
            "javascript_errors": errors}


class LoadMonitor:
    """CPU time taken by processes other than this benchmark and its browser while it runs."""

    def __init__(self):
        self.started = time.monotonic()
        self.busy_before = self._busy()

    @staticmethod
    def _busy() -> float:
        times = psutil.cpu_times()
        return times.user + times.nice + times.system

    def others_share(self) -> float:
        ours = 0.0
        for process in [psutil.Process(), *psutil.Process().children(recursive=True)]:
            try:
                cpu = process.cpu_times()
                ours += cpu.user + cpu.system + cpu.children_user + cpu.children_system
            except psutil.Error:
                pass
        elapsed = (time.monotonic() - self.started) * (os.cpu_count() or 1)
        others = max(self._busy() - self.busy_before - ours, 0.0)
        return round(others / elapsed, 2)


def measure_app(browser, run: Path, timeout_s: float) -> dict:
    """The Map with the browser scatter on one run folder, in a fresh app server
    (``bench/app_driver.py``): open the run, the first draw, recolour by a score, a box and a lasso
    selection until the selection panel shows them."""
    points = run_points(run)
    n = len(points)
    result: dict = {"n": n, "run": str(run)}
    with tempfile.TemporaryDirectory() as workspace, app_server(Path(workspace)) as url:
        app = AppDriver.open(browser, url, timeout_s)
        result.update(app.open_run(run))
        step(f"app {n:,}: run open in {result['open_run_s']} s")
        result.update(app.open_map(n))
        step(f"app {n:,}: map drawn {result['map_draw_s']} s after the click")
        result.update(app.recolour("confidence"))
        step(f"app {n:,}: recoloured in {result['recolour_s']} s")
        result.update(app.box_select(points))
        step(f"app {n:,}: box selection shown {result['box_select_s']} s after the release")
        result.update(app.lasso_select(points))
        result["browser_heap_mb"] = app.heap_mb()
        result["chromium_rss_mb"] = chromium_rss_mb(chromium_pid())
        result["draws"] = app.view_stats()["draws"]
        result["javascript_errors"] = list(app.errors)
        app.page.screenshot(path=str(Path(tempfile.gettempdir()) / f"scatter_app_{n}.png"))
        app.close()
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "scatter_choice.json")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--libraries", nargs="+", default=["plotly", "regl"], choices=["plotly", "regl"])
    parser.add_argument("--app", type=Path, nargs="+", metavar="RUN",
                        help="measure the app's Map on these run folders instead of the two libraries")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds to wait for any one app step")
    args = parser.parse_args(argv)
    from playwright.sync_api import sync_playwright

    import plotly

    monitor = LoadMonitor()
    if args.app:
        app: dict = {"machine": machine_info(), "load_average_at_start": list(os.getloadavg()), "runs": {}}
        with sync_playwright() as playwright:
            for run in args.app:
                browser = playwright.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
                try:
                    entry = measure_app(browser, run, args.timeout)
                finally:
                    browser.close()
                app["runs"][str(entry["n"])] = entry
                print(json.dumps({k: v for k, v in entry.items() if "fetched" not in k and k != "draws"}), flush=True)
        app["load_average_at_end"] = list(os.getloadavg())
        app["other_processes_cpu_share"] = monitor.others_share()
        existing = json.loads(args.out.read_text()) if args.out.exists() else {}
        existing["app"] = app
        args.out.write_text(json.dumps(existing, indent=2) + "\n")
        return 0
    result: dict = {"benchmark": "scatter_choice", "machine": machine_info(),
                    "load_average_at_start": list(os.getloadavg()), "viewport_px": PLOT_SIZE,
                    "plotly_js": "plotly.min.js from the plotly " + plotly.__version__ + " Python package",
                    "regl_scatterplot": json.loads((FRONTEND / "node_modules" / "regl-scatterplot" /
                                                    "package.json").read_text())["version"],
                    "sizes": {}}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        shutil.copy(Path(plotly.__file__).parent / "package_data" / "plotly.min.js", folder)
        build_regl_bundle(folder)
        for library, template in (("plotly", PLOTLY_PAGE), ("regl", REGL_PAGE)):
            (folder / f"{library}.html").write_text(template % {"harness": HARNESS, "size": PLOT_SIZE})
        server, url = serve(folder)
        try:
            with sync_playwright() as playwright:
                for n in args.sizes:
                    for name, values in synthetic_map(n).items():
                        (folder / f"{name}.bin").write_bytes(values.tobytes())
                    entry = result["sizes"][str(n)] = {}
                    for library in args.libraries:
                        # a fresh browser per measurement: heap and RSS are this library's alone
                        browser = playwright.chromium.launch(executable_path="/usr/bin/chromium",
                                                             args=CHROMIUM_ARGS)
                        try:
                            entry[library] = measure(browser, url, library, args.repeats)
                        finally:
                            browser.close()
                        print(json.dumps({"n": n, "library": library, **entry[library]}), flush=True)
        finally:
            server.shutdown()
    result["load_average_at_end"] = list(os.getloadavg())
    result["other_processes_cpu_share"] = monitor.others_share()
    existing = json.loads(args.out.read_text()) if args.out.exists() else {}
    existing.update({k: v for k, v in result.items()})
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(existing, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
