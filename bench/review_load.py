"""Load test of team review: many signed-in reviewers in one session, one server on PostgreSQL.

Issue 12's target: 12 browser contexts review the same session for 3 minutes against one app
server whose review store is PostgreSQL; no decision is lost; a decision is visible to the
others within 5 s at p95; ``/_stcore/health`` stays answered throughout.

What it does:

1. Analyses the bundled breast-cancer table into a fresh workspace (the Review page needs a run).
2. Starts a throwaway PostgreSQL server (``tests/conftest_pg.running_postgres``) and creates one
   session of ``--examples`` examples, owner ``alice@example.org`` (an admin), reviewers
   ``user01@example.org`` … ``userNN@example.org``.
3. Starts ``streamlit run app.py`` in team mode behind a (simulated) auth proxy: every browser
   context sends ``X-Forwarded-Email: userNN@example.org``, the header named by
   ``CARTOGRAPHER_TRUSTED_USER_HEADER``.
4. Each context opens Review, and until the time is up: stays on its current example for 1.5–4 s
   (an observer in the page notes when another reviewer's decision is first listed under
   "Decisions on this example"), then presses K, D or F and waits until "You have decided n of
   N" counts it (the acknowledgement). The window is 1280 × 800.
5. Meanwhile a thread asks ``/_stcore/health`` every 0.5 s.

Figures:

- **lost**: acknowledged decisions missing from the database (must be 0), and database rows per
  reviewer against acknowledgements.
- **visibility lag**: for every decision recorded while another reviewer was looking at the same
  example, the time from the database row's ``created_at`` until that reviewer's page listed it.
  A decision never shown although the observer stayed at least 5 s longer counts as a miss
  (lag > 5 s); one whose observer left sooner is censored (not counted).
- **health**: latency percentiles and failures of the health endpoint.

Run: ``.venv/bin/python bench/review_load.py`` (about 5 minutes; ``--contexts 12 --seconds 180``).
Results: ``bench/results/review_load.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.app_server import running_app  # noqa: E402
from tests.conftest_pg import running_postgres  # noqa: E402

HEADER = "X-Forwarded-Email"
OWNER = "alice@example.org"
SAMPLE_KEY = "breast-cancer"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage"]
VIEWPORT = (1280, 800)  # a laptop's window
# Watches the page as it changes (skipping elements Streamlit marks stale during a rerun) and
# records, in the browser's clock:
# - when each other reviewer's decision is first listed under "Decisions on this example"
#   (``__reviewLoadSeen``, key "example id|reviewer");
# - the example shown (``__reviewLoadExample``) and this reviewer's "You have decided n of N"
#   count with the time it first showed (``__reviewLoadDecided``).
# The driver reads these variables instead of querying the page: a text or role query walks the
# whole page in the browser, and with twelve browsers on two cores that polling was a good part
# of the load it was meant to measure.
SEEN_OBSERVER = r"""
(() => {
  const seen = {};
  window.__reviewLoadSeen = seen;
  window.__reviewLoadExample = null;
  window.__reviewLoadDecided = {count: -1, at: 0};
  const clean = (text) => text.replace(/[\u200b-\u200d\u2060\ufeff]/g, "");
  const fresh = (element) => !element.closest('[data-stale="true"]');
  const scan = () => {
    scheduled = false;
    const now = Date.now() / 1000;
    for (const bar of document.querySelectorAll('[data-testid="stProgress"]')) {
      const match = fresh(bar) && clean(bar.textContent).match(/You have decided ([\d,]+) of/);
      const count = match ? Number(match[1].replace(/,/g, "")) : -1;
      if (count >= 0 && count !== window.__reviewLoadDecided.count) {
        window.__reviewLoadDecided = {count: count, at: now};
      }
    }
    const heading = [...document.querySelectorAll("h3")].find(
      (h) => fresh(h) && /^Example \d+ of/.test(clean(h.textContent)));
    window.__reviewLoadExample = heading ? clean(heading.textContent).split("· ").pop().trim() : null;
    if (!heading) return;
    const exampleId = window.__reviewLoadExample;
    for (const item of document.querySelectorAll("li")) {
      if (!fresh(item)) continue;
      const match = clean(item.textContent).match(/^(user\d{2}@example\.org)\s*:\s*(Keep|Drop|Flag|Relabel)/);
      if (match && !((exampleId + "|" + match[1]) in seen)) seen[exampleId + "|" + match[1]] = now;
    }
  };
  let scheduled = false;
  new MutationObserver(() => {
    if (!scheduled) { scheduled = true; setTimeout(scan, 50); }
  }).observe(document, {subtree: true, childList: true, characterData: true, attributes: true,
                        attributeFilter: ["data-stale"]});
})();
"""


def _cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of one process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _machine_busy_seconds() -> float:
    """CPU seconds all cores spent not idle, so far (from /proc/stat)."""
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    return (sum(values) - values[3] - values[4]) / os.sysconf("SC_CLK_TCK")


def _percentiles(values, qs=(50, 95, 99)) -> dict:
    if len(values) == 0:
        return {f"p{q}": None for q in qs} | {"max": None, "n": 0}
    array = np.asarray(values, dtype=float)
    return {f"p{q}": round(float(np.percentile(array, q)), 4) for q in qs} | {
        "max": round(float(array.max()), 4), "n": int(array.size)}


class HealthProbe(threading.Thread):
    """Asks the health endpoint every ``interval`` seconds until stopped."""

    def __init__(self, url: str, interval: float = 0.5):
        super().__init__(daemon=True)
        self.url, self.interval = url, interval
        self.latencies: list[float] = []
        self.failures: list[str] = []
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.is_set():
            started = time.perf_counter()
            try:
                ok = urllib.request.urlopen(f"{self.url}/_stcore/health", timeout=10).read() == b"ok"
                if not ok:
                    self.failures.append("not ok")
            except OSError as exc:
                self.failures.append(type(exc).__name__)
            self.latencies.append(time.perf_counter() - started)
            self._stop_event.wait(self.interval)

    def stop(self) -> None:
        self._stop_event.set()
        self.join(15)


async def _reviewer(browser, url: str, email: str, sample_title: str, deadline: float, seed: int,
                    log: dict) -> None:
    """One reviewer's browser context, deciding until ``deadline``; fills ``log``."""
    from playwright.async_api import TimeoutError as PlaywrightTimeout
    from playwright.async_api import expect

    rng = np.random.default_rng(seed)
    context = await browser.new_context(viewport={"width": VIEWPORT[0], "height": VIEWPORT[1]},
                                        extra_http_headers={HEADER: email})
    await context.add_init_script(SEEN_OBSERVER)
    page = await context.new_page()
    page.set_default_timeout(60_000)
    page.on("pageerror", lambda error: log["errors"].append(f"{time.time():.1f} {error} {error.stack or ''}"[:1500]))
    try:
        await page.goto(f"{url}/review")
        await page.wait_for_selector("[data-testid=stApp]")
        await page.locator("[data-testid=stSelectbox]").filter(has_text="Dataset").first.click()
        await page.get_by_role("option", name=sample_title, exact=True).click()
        await expect(page.get_by_role("heading", name=re.compile(r"^Example \d+ of"))).to_be_visible(timeout=120_000)
        shown = "() => window.__reviewLoadExample !== null && window.__reviewLoadDecided.count >= 0"
        await page.wait_for_function(shown, polling=100)
        while time.time() < deadline:
            # the example on screen (not while a rerun has marked the heading stale)
            example_id = await (await page.wait_for_function("() => window.__reviewLoadExample",
                                                             polling=100)).json_value()
            arrive = time.time()
            stay_until = min(deadline, arrive + float(rng.uniform(1.5, 4.0)))
            await asyncio.sleep(max(0.0, stay_until - time.time()))
            # what the page's own observer saw meanwhile (first time, in the browser's clock)
            for key, when in (await page.evaluate("window.__reviewLoadSeen")).items():
                if not key.endswith(f"|{email}") and (key not in log["seen"] or when < log["seen"][key]):
                    log["seen"][key] = when
            log["stays"].append([example_id, arrive, time.time()])
            if time.time() >= deadline:
                break
            key = str(rng.choice(["k", "d", "f"], p=[0.6, 0.25, 0.15]))
            # the shortcut goes to the page, not to a focused input (as a click on the page would)
            await page.evaluate("document.activeElement && document.activeElement.blur()")
            decided = (await page.evaluate("window.__reviewLoadDecided"))["count"]
            pressed = time.time()
            await page.keyboard.press(key)
            try:
                # acknowledged: the count went up after the key press
                counted = await (await page.wait_for_function(
                    "([n, t]) => { const d = window.__reviewLoadDecided; return d.count > n && d.at >= t && d; }",
                    arg=[decided, pressed - 0.05], polling=100, timeout=30_000)).json_value()
                log["acknowledged"].append([example_id, {"k": "keep", "d": "drop", "f": "flag"}[key],
                                            pressed, counted["at"]])
            except PlaywrightTimeout:
                log["unacknowledged"].append([example_id, key, pressed])
    except Exception as exc:  # a reviewer that fails is reported, the others go on
        log["errors"].append(f"{time.time():.1f} {type(exc).__name__}: {exc}")
    finally:
        await context.close()


def _niced_chromium(folder: Path, niceness: int) -> str:
    """A launcher that starts Chromium at a lower CPU priority. The browsers stand in for the
    reviewers' own machines; on this one machine they must not starve the server being measured."""
    launcher = folder / "chromium-niced"
    launcher.write_text(f'#!/bin/sh\nexec nice -n {int(niceness)} /usr/bin/chromium "$@"\n')
    launcher.chmod(0o755)
    return str(launcher)


async def _drive(url: str, emails: list[str], sample_title: str, seconds: float, chromium: str) -> dict:
    from playwright.async_api import async_playwright

    logs = {email: {"seen": {}, "stays": [], "acknowledged": [], "unacknowledged": [], "errors": []}
            for email in emails}
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        start = time.time()
        deadline = start + seconds
        # open the contexts a little apart, as people arrive; every one reviews until the deadline
        tasks = []
        for i, email in enumerate(emails):
            tasks.append(asyncio.create_task(_reviewer(browser, url, email, sample_title, deadline, i, logs[email])))
            await asyncio.sleep(1.0)
        await asyncio.gather(*tasks)
        await browser.close()
    return {"start": start, "deadline": deadline, "logs": logs}


async def _warm_up(url: str, sample_title: str, chromium: str) -> None:
    """Open the Review page once as the owner, so the dataset and the run are loaded."""
    from playwright.async_api import async_playwright, expect

    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        context = await browser.new_context(extra_http_headers={HEADER: OWNER})
        page = await context.new_page()
        await page.goto(f"{url}/review")
        await page.locator("[data-testid=stSelectbox]").filter(has_text="Dataset").first.click()
        await page.get_by_role("option", name=sample_title, exact=True).click()
        await expect(page.get_by_role("heading", name=re.compile(r"^Example \d+ of"))).to_be_visible(timeout=180_000)
        await browser.close()


def _analyse(workspace: Path):
    from analytics.datasets import load_dataset
    from analytics.pipeline import AnalysisConfig, run_analysis
    from analytics.samples import sample_by_key
    from analytics.workspace import Workspace

    sample = sample_by_key(SAMPLE_KEY)
    dataset = load_dataset(sample.path, roles=sample.roles)
    run_analysis(dataset, AnalysisConfig(), workspace=Workspace(workspace))
    return sample, dataset


def _visibility(decisions, logs: dict, window: float = 5.0) -> dict:
    """Lag from each database row to its first appearance on another reviewer's page."""
    lags, misses, censored, samples = [], 0, 0, []
    for reviewer, example_id, created in decisions:
        for observer, log in logs.items():
            if observer == reviewer:
                continue
            for stay_id, arrive, leave in log["stays"]:
                if stay_id != example_id or not (arrive <= created <= leave):
                    continue
                seen = log["seen"].get(f"{example_id}|{reviewer}")
                if seen is not None and seen >= created - 0.5:
                    lags.append(max(0.0, seen - created))
                    samples.append([observer, reviewer, example_id, round(created, 3), round(lags[-1], 3),
                                    round(arrive, 3), round(leave, 3)])
                elif leave - created >= window:
                    misses += 1
                else:
                    censored += 1
    measured = len(lags) + misses
    within = sum(lag <= window for lag in lags)
    return {"lag_s": _percentiles(lags), "missed_over_5s": misses, "censored": censored,
            "share_within_5s": round(within / measured, 4) if measured else None,
            "p95_with_misses_s": (round(float(np.percentile(lags + [float("inf")] * misses, 95)), 3)
                                  if measured else None),
            # every measured lag: observer, decider, example, created, lag, observer's arrival, leave
            "samples": samples}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--contexts", type=int, default=12)
    parser.add_argument("--seconds", type=float, default=180.0)
    parser.add_argument("--examples", type=int, default=300)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    parser.add_argument("--warm-up", type=float, default=60.0,
                        help="seconds from the server's start before the reviewers arrive")
    parser.add_argument("--browser-nice", type=int, default=10,
                        help="CPU niceness of the browsers (they simulate the reviewers' own machines)")
    args = parser.parse_args(argv)

    from analytics.store import ReviewStore

    folder = Path(tempfile.mkdtemp(prefix="review-load-"))
    workspace = folder / "workspace"
    print("analysing the breast-cancer sample …", flush=True)
    sample, dataset = _analyse(workspace)
    emails = [f"user{i:02d}@example.org" for i in range(1, args.contexts + 1)]
    with running_postgres() as postgres:
        url_db = postgres.url()
        store = ReviewStore.open(url_db, admins=[OWNER], default_role="viewer")
        ids = dataset.table["id"].astype(str).tolist()[: args.examples]
        session = store.create_session("load test", ids, owner=OWNER, fingerprint=dataset.fingerprint,
                                       classes=dataset.classes, reviewers=emails, source="bench")
        env = dict(CARTOGRAPHER_WORKSPACE=str(workspace), CARTOGRAPHER_DATABASE_URL=url_db,
                   CARTOGRAPHER_TRUSTED_USER_HEADER=HEADER, CARTOGRAPHER_ADMINS=OWNER,
                   CARTOGRAPHER_DATA_ROOTS=str(ROOT / "sample_data"))
        log_path = folder / "streamlit.log"
        with running_app(folder, env, timeout=120) as app:
            url, server_started = app.url, time.time()
            # A team server is warm when its reviewers arrive: let the worker pool's start-up
            # (numba's compile of UMAP, at low priority) finish and load the dataset and the
            # run once, before the clock starts.
            asyncio.run(_warm_up(url, sample.title, _niced_chromium(folder, args.browser_nice)))
            time.sleep(max(0.0, args.warm_up - (time.time() - server_started)))
            probe = HealthProbe(url)
            probe.start()
            cpu_before = (time.time(), _cpu_seconds(app.process.pid), _machine_busy_seconds())
            print(f"{args.contexts} reviewers for {args.seconds:.0f} s …", flush=True)
            driven = asyncio.run(_drive(url, emails, sample.title, args.seconds,
                                         _niced_chromium(folder, args.browser_nice)))
            probe.stop()
            cpu_after = (time.time(), _cpu_seconds(app.process.pid), _machine_busy_seconds())
        history = store.history(session.id)
        store.close()

    logs = driven["logs"]
    # An acknowledged decision is lost when the database has no row of that reviewer and decision
    # written between the key press and the acknowledgement (matched by time, not by the example
    # id read off the page: a late answer to an earlier press can move the page under the reader).
    written = {}
    for r in history.itertuples():
        written.setdefault((r.reviewer, r.decision), []).append(r.created_at.timestamp())
    acknowledged, lost = [], []
    for email, log in logs.items():
        used = set()
        for example_id, decision, pressed, done in log["acknowledged"]:
            acknowledged.append((email, example_id, decision))
            match = next((t for t in written.get((email, decision), [])
                          if pressed - 1.0 <= t <= done + 1.0 and t not in used), None)
            if match is None:
                lost.append((email, example_id, decision, pressed, done))
            else:
                used.add(match)
    decisions = [(r.reviewer, r.example_id, r.created_at.timestamp()) for r in history.itertuples()]
    ack_latency = [done - pressed for log in logs.values() for _, _, pressed, done in log["acknowledged"]]
    result = {
        "contexts": args.contexts, "seconds": args.seconds, "examples": len(ids), "database": "postgresql",
        "decisions_in_database": len(history), "acknowledged": len(acknowledged),
        "unacknowledged_presses": sum(len(log["unacknowledged"]) for log in logs.values()),
        "lost": len(lost), "lost_examples": lost[:20], "browser_nice": args.browser_nice,
        "database_rows": [[r.reviewer, r.example_id, r.decision, r.created_at.timestamp()]
                          for r in history.itertuples()],
        "started_at": driven["start"],
        "per_reviewer": {email: {"acknowledged": len(log["acknowledged"]),
                                 "first_acknowledged_after_s": (round(log["acknowledged"][0][3] - driven["start"], 1)
                                                                if log["acknowledged"] else None),
                                 "in_database": int((history["reviewer"] == email).sum()),
                                 "errors": log["errors"][:5]} for email, log in logs.items()},
        "acknowledgement_s": _percentiles(ack_latency),
        "visibility": _visibility(decisions, logs),
        "health_s": _percentiles(probe.latencies) | {"failures": len(probe.failures),
                                                    "requests": len(probe.latencies)},
        "cpu_count": os.cpu_count(),
        # where the two cores went: the app server's own process, and the whole machine (the
        # browsers, the worker pool, PostgreSQL and this driver make up the difference)
        "server_process_cores": round((cpu_after[1] - cpu_before[1]) / (cpu_after[0] - cpu_before[0]), 3),
        "machine_busy_cores": round((cpu_after[2] - cpu_before[2]) / (cpu_after[0] - cpu_before[0]), 3),
        "server_log_tail": log_path.read_text()[-2000:],
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "review_load.json").write_text(json.dumps(result, indent=2, default=str))
    summary = {k: result[k] for k in ("decisions_in_database", "acknowledged", "unacknowledged_presses", "lost",
                                      "acknowledgement_s", "health_s", "server_process_cores", "machine_busy_cores")}
    summary["visibility"] = {k: v for k, v in result["visibility"].items() if k != "samples"}
    print(json.dumps(summary, indent=2))
    return 0 if not lost and not probe.failures else 1


if __name__ == "__main__":
    raise SystemExit(main())
