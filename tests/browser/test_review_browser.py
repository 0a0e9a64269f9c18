"""A whole review session in a real browser: two reviewers in two browser contexts decide on the
same examples, the conflict appears for the owner without a reload, the owner adjudicates, and
the exported outcome reflects it."""

from __future__ import annotations

import json
import re
import time

import pandas as pd
from playwright.sync_api import expect

from tests.browser.conftest import pick, wait_idle

SAMPLE = "Breast cancer diagnosis (tabular)"


def open_review(browser, app_url, reviewer: str, errors: list[str]):
    context = browser.new_context(viewport={"width": 1400, "height": 1600})
    page = context.new_page()
    page.set_default_timeout(30_000)
    page.on("pageerror", lambda error: errors.append(f"{reviewer}: {error}"))
    page.goto(f"{app_url}/review")
    page.wait_for_selector("[data-testid=stApp]")
    pick(page, "Dataset", SAMPLE)
    expect(page.get_by_test_id("stSidebar").get_by_text("breast_cancer.csv: 569 examples")).to_be_visible(
        timeout=60_000)
    expect(page.get_by_role("heading", name="Review")).to_be_visible(timeout=60_000)
    wait_idle(page)
    name = page.get_by_role("textbox", name="Your name (for reviews)")
    name.fill(reviewer)
    name.press("Enter")
    expect(page.get_by_text(f"Reviewing as {reviewer} ·")).to_be_visible()
    wait_idle(page)
    return context, page


def decide(page, key: str, decided: int, total: int) -> None:
    """Press a quick key (focus outside any field) and wait until the decision is counted."""
    page.get_by_role("heading", name="Review").click()  # focus out of any text field
    page.keyboard.press(key)
    expect(page.get_by_text(f"You have decided {decided} of {total}").first).to_be_visible()
    wait_idle(page)


def test_two_reviewers_a_conflict_adjudication_and_export(browser, app_url, analysed_workspace):
    errors: list[str] = []
    session_name = f"browser review {int(time.time())}"
    owner_context, owner = open_review(browser, app_url, "alice", errors)
    reviewer_context = None
    try:
        # alice creates a session on the four examples with the highest loss
        # the form is open when the dataset has no session yet (the page draws it after the name)
        try:
            expect(owner.get_by_text("The top of a score").first).to_be_visible(timeout=15_000)
        except AssertionError:
            owner.get_by_text(re.compile("^New review session")).click()
        owner.get_by_text("The top of a score").first.click()
        wait_idle(owner)
        count = owner.get_by_role("spinbutton", name="How many").first
        count.fill("4")
        count.press("Enter")
        wait_idle(owner)
        reviewers = owner.get_by_role("textbox", name="Reviewers (comma-separated)")
        reviewers.fill("bob")  # only the owner and listed reviewers may decide
        reviewers.press("Enter")
        wait_idle(owner)
        name = owner.get_by_role("textbox", name="Session name")
        name.fill(session_name)
        name.press("Enter")
        wait_idle(owner)
        owner.get_by_role("button", name="Create the session").click()
        expect(owner.get_by_text(f"Created session “{session_name}” with 4 examples.")).to_be_visible()
        expect(owner.get_by_role("heading", name=re.compile("^Example 1 of 4"))).to_be_visible()
        wait_idle(owner)
        first_id = owner.get_by_role("heading", name=re.compile("^Example 1 of 4")).inner_text().split("· ")[-1]

        # alice keeps all three first examples with the K key
        for decided in (1, 2, 3):
            decide(owner, "k", decided, 4)

        # bob opens the same session, sees alice's decision, and drops the first example
        reviewer_context, reviewer = open_review(browser, app_url, "bob", errors)
        pick(reviewer, "Session", f"{session_name} · 4 examples · owner alice")
        expect(reviewer.get_by_role("heading", name=f"Example 1 of 4 · {first_id}")).to_be_visible()
        expect(reviewer.get_by_text("alice: Keep").first).to_be_visible()
        wait_idle(reviewer)
        decide(reviewer, "d", 1, 4)
        decide(reviewer, "k", 2, 4)

        # alice sees the conflict appear without reloading (the progress refreshes itself)
        conflicts = owner.get_by_test_id("stMetric").filter(has_text="Conflicts")
        expect(conflicts).to_contain_text("1", timeout=20_000)
        owner.get_by_text("Agreement and conflicts").click()
        expect(owner.get_by_role("heading", name="Conflicts · 1")).to_be_visible()
        expect(owner.get_by_role("heading", name="Adjudicate")).to_be_visible()
        wait_idle(owner)
        pick(owner, "Final decision", "Drop")
        owner.get_by_role("textbox", name="Note (optional)").fill("<i>bob</i> is right")
        owner.get_by_role("button", name="Adjudicate").click()
        expect(owner.get_by_text(f"Adjudicated {first_id}: Drop.")).to_be_visible()
        expect(owner.get_by_role("heading", name="Conflicts · 0")).to_be_visible(timeout=20_000)

        # bob is not the owner: no adjudication for him
        reviewer.get_by_text("Agreement and conflicts").click()
        expect(reviewer.get_by_text("Only the session's owner, alice, or an admin adjudicates conflicts.")).to_be_visible()

        # alice exports the outcome to the workspace: the dropped example is gone
        owner.get_by_text("Export", exact=True).last.click()
        wait_idle(owner)
        stem = re.sub(r"\W+", "-", session_name)
        file_name = owner.get_by_role("textbox", name="File name")
        file_name.fill(stem)
        file_name.press("Enter")
        wait_idle(owner)
        owner.get_by_role("button", name="Write to the workspace").click()
        expect(owner.get_by_text("Wrote 3 rows and the manifest:")).to_be_visible()
        exported = analysed_workspace / "exports" / f"{stem}.csv"
        frame = pd.read_csv(exported)
        assert first_id not in set(frame["id"]) and len(frame) == 3
        assert frame["final_decision"].tolist() == ["keep", "keep", "undecided"]
        manifest = json.loads((exported.parent / f"{stem}.csv.manifest.json").read_text())
        assert manifest["session"]["name"] == session_name and manifest["outcome_applied"]
        assert manifest["outcome_counts"] == {"drop": 1, "keep": 2, "undecided": 1}
        assert manifest["decision_counts"] == {"alice": {"keep": 3}, "bob": {"drop": 1, "keep": 1}}
    finally:
        owner_context.close()
        if reviewer_context is not None:
            reviewer_context.close()
    assert not errors, f"JavaScript errors in the page: {errors}"
