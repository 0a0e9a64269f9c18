"""The app under background load: three users each start a heavy analysis while a fourth opens
the Overview, and ``/_stcore/health`` is polled every 50 ms.

Targets (issue 12, item 4): health p95 < 100 ms while the jobs run, and the fourth user's
Overview drawn within 3 s.

What it does:

1. Starts ``streamlit run app.py`` with ``tests/app_server.py`` (that of ``--app-dir``, which serves
   the app of the checkout it lies in, so an older checkout can be measured the same way: copy the
   file there if it has none) on a free loopback port, headless, with a fresh empty workspace:
   nothing is cached, every analysis computes from scratch.
2. Polls ``/_stcore/health`` every 50 ms for 3 s at rest, then all through the load.
3. Three Chromium users (one browser context each) open the app, pick a different bundled sample
   (text: MiniLM embeddings; images: pixels; table) and open the Map, which starts the default
   analysis of that sample (embeddings, kNN, PCA, UMAP, probe dynamics, scores, clusters). A map
   is ready when the page shows no progress and its scatter has drawn its points (the browser
   scatter, ``ui/scatter``; a Plotly chart in checkouts from before it).
4. Before any job, the Overview is opened twice (the first visit loads the dataset); the second
   time is "Overview at rest", the same machine's figure with nothing running.
   ``--overview-at`` seconds after the third user started, a fourth user opens the app: the time
   from ``page.goto`` to the Overview's heading, class-balance chart and sample table is the
   "Overview s" figure. It is measured again at ``--overview-again-at``.
5. After ``--seconds`` it records which maps are ready, stops the server, and writes
   ``results/jobs_load.json`` (or ``--out``), keyed by ``--label`` so the old and new designs
   sit side by side.

Run it on an otherwise idle machine::

    .venv/bin/python bench/jobs_load.py --label processes
    git worktree add /tmp/cartographer-threads <commit before the job queue>
    .venv/bin/python bench/jobs_load.py --label threads --app-dir /tmp/cartographer-threads
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import statistics
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.app_driver import CHROMIUM, CHROMIUM_ARGS  # noqa: E402
from tests.browser.map_scatter import SCATTER  # noqa: E402

# the Map is on screen: its browser scatter has drawn (or, before it, a Plotly chart)
MAP_SHOWN = f"{SCATTER}, .js-plotly-plot"
MAP_DRAWN = ("() => !!document.querySelector('.js-plotly-plot')?._fullData?.length || !!document"
             f".querySelector(\"{SCATTER}\")?.contentDocument?.getElementById('root')?.dataset.drawn")


def server_helper(app_dir: Path):
    """``running_app`` of ``app_dir``'s ``tests/app_server.py``: it serves the app of the checkout
    it lies in."""
    if app_dir == ROOT:
        from tests.app_server import running_app

        return running_app
    path = app_dir / "tests" / "app_server.py"
    if not path.exists():
        raise SystemExit(f"{path} is missing: copy {ROOT / 'tests' / 'app_server.py'} there (it serves the "
                         "app.py of the checkout it lies in)")
    spec = importlib.util.spec_from_file_location("jobs_load_app_server", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # (its dataclass looks its module up)
    spec.loader.exec_module(module)
    return module.running_app


class HealthPoller(threading.Thread):
    """GET /_stcore/health every ``interval`` s; records (time, latency s, ok)."""

    def __init__(self, url: str, interval: float = 0.05) -> None:
        super().__init__(daemon=True)
        self.url, self.interval = url, interval
        self.samples: list[tuple[float, float, bool]] = []
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            began = time.perf_counter()
            try:
                ok = urllib.request.urlopen(self.url, timeout=60).read() == b"ok"
            except OSError:
                ok = False
            took = time.perf_counter() - began
            self.samples.append((time.monotonic(), took, ok))
            self.stop.wait(max(0.0, self.interval - took))

    def between(self, start: float, end: float) -> list[float]:
        return [took for at, took, _ in self.samples if start <= at <= end]


def latency_summary(values: list[float]) -> dict:
    if not values:
        return {"n": 0}
    ordered = sorted(values)

    def q(p: float) -> float:
        return ordered[min(len(ordered) - 1, int(round(p * (len(ordered) - 1))))]

    return {"n": len(values), "median_ms": round(statistics.median(values) * 1000, 1),
            "p95_ms": round(q(0.95) * 1000, 1), "p99_ms": round(q(0.99) * 1000, 1),
            "max_ms": round(max(values) * 1000, 1)}


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(parent, []).append(int(entry.name))
    found, stack = [], [pid]
    while stack:
        for child in children.get(stack.pop(), []):
            found.append(child)
            stack.append(child)
    return found


def pick(page, label: str, option: str) -> None:
    page.locator("[data-testid=stSelectbox]").filter(has_text=label).first.click()
    page.get_by_role("option", name=option, exact=True).click()


def sample_titles() -> list[str]:
    sys.path.insert(0, str(ROOT))
    from analytics.samples import SAMPLES

    return [s.title for s in SAMPLES]


def open_overview(browser, url: str) -> float:
    """Seconds from goto to the Overview drawn (heading, class-balance table, sample table; the
    class balance was a Plotly chart until 2026-11-30 17:30 UTC)."""
    from playwright.sync_api import expect

    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    page.set_default_timeout(120_000)
    began = time.perf_counter()
    page.goto(url)
    expect(page.get_by_role("heading", name="debian_packages.csv")).to_be_visible(timeout=120_000)
    expect(page.get_by_text("Class balance")).to_be_visible(timeout=120_000)
    expect(page.get_by_text("A sample of examples")).to_be_visible(timeout=120_000)
    expect(page.get_by_test_id("stDataFrame")).to_have_count(4, timeout=120_000)  # balance, splits, columns, sample
    expect(page.get_by_test_id("stDataFrame").last).to_be_visible(timeout=120_000)
    took = time.perf_counter() - began
    context.close()
    return took


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--app-dir", type=Path, default=ROOT, help="checkout whose app.py is served")
    parser.add_argument("--label", default="processes", help="key of this measurement in the results")
    parser.add_argument("--seconds", type=float, default=90.0, help="how long the load is measured")
    parser.add_argument("--overview-at", type=float, default=10.0)
    parser.add_argument("--overview-again-at", type=float, default=40.0)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "jobs_load.json")
    parser.add_argument("--nice", type=int, default=0,
                        help="niceness added to this benchmark and all it starts (server, workers, Chromium); "
                             "a negative value (root only) keeps other people's work on a shared machine "
                             "from dominating the figures")
    args = parser.parse_args(argv)
    if args.nice:
        os.nice(args.nice)

    from playwright.sync_api import sync_playwright

    app_dir = args.app_dir.resolve()
    running_app = server_helper(app_dir)
    workspace = Path(tempfile.mkdtemp(prefix="jobs-load-workspace-"))
    log_dir = Path(tempfile.mkdtemp(prefix="jobs-load-log-"))
    result: dict = {"label": args.label, "app_dir": str(app_dir), "nice": args.nice, "machine": {
        "cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()}}
    with running_app(log_dir, {"CARTOGRAPHER_WORKSPACE": str(workspace), "PYTHONPATH": str(app_dir)}) as app:
        url, server = app.url, app.process
        poller = HealthPoller(f"{url}/_stcore/health")
        poller.start()
        rest_start = time.monotonic()
        time.sleep(3.0)
        result["health_at_rest"] = latency_summary(poller.between(rest_start, time.monotonic()))

        titles = sample_titles()
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            open_overview(browser, url)  # the first visit loads the dataset; what follows is cached
            result["overview_at_rest_s"] = round(open_overview(browser, url), 2)
            users = []
            load_start = time.monotonic()
            for title in titles:
                context = browser.new_context(viewport={"width": 1400, "height": 1000})
                page = context.new_page()
                page.set_default_timeout(120_000)
                began = time.perf_counter()
                page.goto(url)
                page.wait_for_selector("[data-testid=stApp]")
                page.get_by_role("heading", name="debian_packages.csv").wait_for()
                if title != titles[0]:
                    pick(page, "Dataset", title)
                    page.get_by_text("A sample of examples").wait_for()
                page.get_by_role("link", name="Map", exact=True).click()
                page.locator(f"[data-testid=stProgress], {MAP_SHOWN}").first.wait_for()
                progress = page.locator("[data-testid=stProgress]").all_inner_texts()
                users.append({"sample": title, "page": page, "started_s": round(time.perf_counter() - began, 2),
                              "progress_at_start": progress[0].strip() if progress else None})
            jobs_started = time.monotonic()
            result["users_started_in_s"] = round(jobs_started - load_start, 2)
            server_cpu_start = cpu_seconds(server.pid)
            result["load_average_at_start"] = os.getloadavg()

            overview = {}
            for name, at in (("first", args.overview_at), ("again", args.overview_again_at)):
                time.sleep(max(0.0, jobs_started + at - time.monotonic()))
                visit_start = time.monotonic()
                overview[name] = {"at_s": at, "seconds": round(open_overview(browser, url), 2)}
                overview[name]["window"] = (visit_start, time.monotonic())
            result["overview"] = overview

            queue_texts = set()
            while time.monotonic() < jobs_started + args.seconds:
                for user in users:
                    try:
                        for text in user["page"].locator("[data-testid=stProgress]").all_inner_texts():
                            if "queue" in text:
                                queue_texts.add(text.strip())
                    except Exception:
                        pass
                time.sleep(1.0)
            load_end = time.monotonic()
            result["load_average_at_end"] = os.getloadavg()
            result["server_process_cpu_share"] = round((cpu_seconds(server.pid) - server_cpu_start)
                                                       / (load_end - jobs_started), 2)
            workers = descendants(server.pid)
            result["server_children"] = len(workers)
            for user in users:
                page = user.pop("page")
                user["map_ready"] = page.locator("[data-testid=stProgress]").count() == 0 and \
                    page.evaluate(MAP_DRAWN)
                progress = page.locator("[data-testid=stProgress]").all_inner_texts()
                user["progress_at_end"] = progress[0].strip() if progress else None
            browser.close()
        poller.stop.set()
        poller.join()
        result["users"] = users
        result["queue_messages_seen"] = sorted(queue_texts)
        result["health_under_load"] = latency_summary(poller.between(jobs_started, load_end))
        windows = [visit.pop("window") for visit in overview.values()]
        result["health_under_load_outside_overview_visits"] = latency_summary(
            [took for at, took, _ in poller.samples
             if jobs_started <= at <= load_end and not any(a <= at <= b for a, b in windows)])
        result["health_series_ms"] = [[round(at - jobs_started, 2), round(took * 1000, 1)]
                                      for at, took, _ in poller.samples if jobs_started <= at <= load_end]
        result["health_failed"] = sum(not ok for at, _, ok in poller.samples if jobs_started <= at <= load_end)
        result["load_seconds"] = round(load_end - jobs_started, 1)
        health, worst = result["health_under_load"], max(v["seconds"] for v in overview.values())
        result["targets"] = {"health_p95_under_100_ms": health.get("p95_ms", 1e9) < 100,
                             "overview_within_3_s": worst <= 3.0}
    stored = json.loads(args.out.read_text()) if args.out.exists() else {}
    stored[args.label] = result
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(stored, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
