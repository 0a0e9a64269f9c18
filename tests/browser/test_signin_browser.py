"""Sign-in end to end: the app configured for `st.login` against a real OpenID Connect provider
(`oidc-provider-mock`, started here on a free localhost port). alice (the owner) and bob (a
reviewer) sign in and each record a decision; mallory signs in too and cannot decide in alice's
session, even with a forged proxy header; nothing of hers is stored."""

from __future__ import annotations

import re
import secrets

import pytest
from playwright.sync_api import expect

from analytics.store import ReviewStore
from tests.browser.conftest import free_port, serve_app, wait_idle
from tests.conftest import ROOT

SAMPLE = "Breast cancer diagnosis (tabular)"
ALICE, BOB, MALLORY = "alice@example.org", "bob@example.org", "mallory@example.org"
SESSION = "signed-in review"
KEEP = re.compile(r"^Keep")  # the quick-key buttons' names end with their key


@pytest.fixture(scope="module")
def oidc_provider():
    """A real OIDC provider on a free localhost port, with alice, bob and mallory as users."""
    from oidc_provider_mock import User, run_server_in_thread

    users = [User(sub=name, claims={"email": f"{name}@example.org", "name": name.title()})
             for name in ("alice", "bob", "mallory")]
    with run_server_in_thread(port=0, user_claims=users) as server:
        yield f"http://localhost:{server.server_port}"


@pytest.fixture(scope="module")
def signin_app(tmp_path_factory, analysed_workspace, oidc_provider):
    """The app with an `[auth]` section pointing at the provider (a secrets file of its own,
    given with --secrets.files), on its own review database where alice and bob are reviewers."""
    folder = tmp_path_factory.mktemp("signin")
    database = f"sqlite:///{folder / 'review.sqlite'}"
    with ReviewStore.open(database, admins=["root@example.org"], default_role="viewer") as store:
        store.grant_role(ALICE, "reviewer", actor="root@example.org")
        store.grant_role(BOB, "reviewer", actor="root@example.org")
    port = free_port()  # the redirect URI names the app's port, so it is chosen first
    secrets_file = folder / "secrets.toml"
    secrets_file.write_text(
        "[auth]\n"
        f'redirect_uri = "http://127.0.0.1:{port}/oauth2callback"\n'
        f'cookie_secret = "{secrets.token_hex(32)}"\n'
        'client_id = "data-cartographer"\n'
        'client_secret = "not-a-real-secret"\n'
        f'server_metadata_url = "{oidc_provider}/.well-known/openid-configuration"\n')
    env = {"CARTOGRAPHER_WORKSPACE": str(analysed_workspace), "CARTOGRAPHER_DATABASE_URL": database,
           "CARTOGRAPHER_DATA_ROOTS": f"{ROOT / 'sample_data'}:{analysed_workspace}",
           "CARTOGRAPHER_ADMINS": "root@example.org"}
    with serve_app(folder, env, ("--secrets.files", str(secrets_file)), port=port) as url:
        yield url, database


def shown(text: str) -> re.Pattern:
    """``text`` as the page shows it: an e-mail address carries an invisible word joiner after
    its "@" (so that markdown does not turn it into a link)."""
    return re.compile(re.escape(text).replace("@", "@\u2060?"))


def sign_in(browser, app_url: str, who: str, errors: list[str], **context_options):
    """A fresh browser context signed in as ``who`` through the provider's authorisation page."""
    context = browser.new_context(viewport={"width": 1400, "height": 1400}, **context_options)
    page = context.new_page()
    page.set_default_timeout(30_000)
    page.on("pageerror", lambda error: errors.append(f"{who}: {error}"))
    page.goto(f"{app_url}/review")
    sidebar = page.get_by_test_id("stSidebar")
    # not signed in: no name box, a Sign in button, and nothing of the review store
    expect(sidebar.get_by_role("button", name="Sign in")).to_be_visible(timeout=60_000)
    expect(page.get_by_role("textbox", name="Your name (for reviews)")).to_have_count(0)
    expect(page.get_by_text("Sign in (in the sidebar) to open review sessions")).to_be_visible(timeout=60_000)
    sidebar.get_by_role("button", name="Sign in").click()
    page.wait_for_url(re.compile(r"/oauth2/authorize"))
    page.get_by_role("button", name=who, exact=True).click()  # the provider's one-click user
    page.wait_for_url(re.compile(rf"^{re.escape(app_url)}/?"))
    expect(sidebar.get_by_text(shown(f"Signed in as {who}@example.org"))).to_be_visible(timeout=60_000)
    page.goto(f"{app_url}/review")
    expect(page.get_by_text(shown(f"Reviewing as {who}@example.org ·"))).to_be_visible(timeout=60_000)
    wait_idle(page)
    return context, page


def decide(page, key: str) -> None:
    """Press a quick key (focus outside any field) and wait until the decision is counted."""
    expect(page.get_by_role("button", name=KEEP)).to_be_visible(timeout=60_000)
    wait_idle(page)
    page.get_by_role("heading", name="Review").click()
    page.keyboard.press(key)
    expect(page.get_by_text("You have decided 1 of 3").first).to_be_visible(timeout=30_000)
    wait_idle(page)


def test_two_users_sign_in_and_decide_and_an_impostor_is_refused(browser, signin_app):
    app_url, database = signin_app
    errors: list[str] = []
    contexts = []
    try:
        # alice signs in and creates a session with bob as its reviewer
        context, alice = sign_in(browser, app_url, "alice", errors)
        contexts.append(context)
        alice.get_by_text("The top of a score").first.click()
        wait_idle(alice)
        count = alice.get_by_role("spinbutton", name="How many").first
        count.fill("3")
        count.press("Enter")
        wait_idle(alice)
        for label, value in (("Reviewers (comma-separated)", BOB.upper()), ("Session name", SESSION)):
            box = alice.get_by_role("textbox", name=label)
            box.fill(value)
            box.press("Enter")
            wait_idle(alice)
        alice.get_by_role("button", name="Create the session").click()
        expect(alice.get_by_text(f"Created session “{SESSION}” with 3 examples.")).to_be_visible()
        wait_idle(alice)
        expect(alice.get_by_role("button", name=KEEP)).to_have_count(1)
        decide(alice, "k")

        # bob signs in and drops the first example
        context, bob = sign_in(browser, app_url, "bob", errors)
        contexts.append(context)
        expect(bob.get_by_text(shown(f"owner {ALICE}")).first).to_be_visible()
        decide(bob, "d")

        # mallory signs in, with a forged proxy header for good measure: she reads, cannot decide
        context, mallory = sign_in(browser, app_url, "mallory", errors,
                                   extra_http_headers={"X-Forwarded-Email": ALICE, "X-Forwarded-User": ALICE})
        contexts.append(context)
        expect(mallory.get_by_text(shown(f"Reviewing as {MALLORY} · team role: viewer."))).to_be_visible()
        expect(mallory.get_by_text("You are not a reviewer of this session")).to_be_visible()
        expect(mallory.get_by_role("button", name=KEEP)).to_have_count(0)
        mallory.get_by_role("heading", name="Review").click()
        mallory.keyboard.press("d")  # the quick key does nothing without the button
        wait_idle(mallory)
        mallory.get_by_role("radiogroup", name="View").get_by_text("Agreement and conflicts").click()
        expect(mallory.get_by_text("Only the session's owner").first).to_be_visible()
    finally:
        for context in contexts:
            context.close()

    with ReviewStore.open(database) as store:
        history = store.history(SESSION)
        assert store.get_session(SESSION).owner == ALICE and store.get_session(SESSION).reviewers == (BOB,)
    assert history[["reviewer", "decision", "kind"]].values.tolist() == [
        [ALICE, "keep", "review"], [BOB, "drop", "review"]]
    assert not errors, errors
