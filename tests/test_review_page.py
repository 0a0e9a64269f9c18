"""Review page (AppTest) on the analysed samples: sessions, decisions by two reviewers, conflicts,
adjudication, export, and the messages for bad input."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

from analytics.pipeline import AnalysisConfig, load_run, run_dir_for
from analytics.samples import sample_by_key
from analytics.store import DATABASE_URL_ENV, ReviewStore
from analytics.workspace import Workspace
from tests.conftest import ROOT
from ui import state
from ui.figures import escape_markdown
from ui.selection import Selection

APP = str(ROOT / "app.py")
PAGE = "views/review.py"
SAMPLE = "breast-cancer"


@pytest.fixture(autouse=True)
def clean_caches(clean_app_caches):
    yield


@pytest.fixture(autouse=True)
def review_database(tmp_path, monkeypatch):
    """Each test its own review database (the analysed workspace is shared by the session)."""
    url = f"sqlite:///{tmp_path / 'review.sqlite'}"
    monkeypatch.setenv(DATABASE_URL_ENV, url)
    return url


def open_review(reviewer: str | None = "alice", sample: str = SAMPLE) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=120)
    at.session_state[state.DATASET_CHOICE] = sample_by_key(sample).title
    if reviewer is not None:
        at.session_state[state.REVIEWER] = reviewer
    at.run()
    at.switch_page(PAGE).run()
    assert not at.exception, at.exception
    return at


def run_examples(at) -> pd.DataFrame:
    dataset = at.session_state[state.DATASET]
    return load_run(run_dir_for(dataset, AnalysisConfig(), Workspace.default())).examples


def store_of(url: str) -> ReviewStore:
    return ReviewStore.open(url)


def create_session(at, name: str, **widgets) -> None:
    """Fill the new-session form (``widgets``: key suffix -> value, set in order) and create it."""
    for suffix, value in widgets.items():
        element = at.radio(key=f"review_new_{suffix}") if suffix == "source" else None
        if element is None:
            for kind in ("selectbox", "number_input", "multiselect"):
                found = [w for w in getattr(at, kind) if w.key == f"review_new_{suffix}"]
                if found:
                    element = found[0]
                    break
        element.set_value(value).run()
    at.text_input(key="review_new_name").set_value(name).run()
    at.button(key="review_create").click().run()
    assert not at.exception, at.exception


def top_session(at, url: str, name: str = "top five", n: int = 5, score: str = "loss") -> None:
    create_session(at, name, source="The top of a score", score=score, top_n=n)
    assert store_of(url).get_session(name).n_items == n


def texts(elements) -> list[str]:
    return [e.value for e in elements]


def test_a_session_from_the_selection_and_an_empty_selection(use_analysed_workspace, review_database):
    at = open_review()
    create_session(at, "from the selection")
    assert any("The selection is empty" in e.value for e in at.error)
    examples = run_examples(at)
    fingerprint = at.session_state[state.DATASET].fingerprint
    chosen = examples["id"].astype(str).iloc[[40, 3, 17]].tolist()
    at.session_state[state.SELECTIONS] = {fingerprint: Selection(frozenset(chosen), "map: lasso")}
    at.run()
    at.button(key="review_create").click().run()
    session = store_of(review_database).get_session("from the selection")
    assert session.owner == "alice" and session.fingerprint == fingerprint
    assert session.source == "selection (map: lasso)" and session.classes == ("benign", "malignant")
    assert session.run.endswith(str(run_dir_for(at.session_state[state.DATASET], AnalysisConfig(),
                                                Workspace.default()).name))
    # in dataset order
    items = store_of(review_database).session_items(session.id)["example_id"].tolist()
    assert items == sorted(chosen, key=examples["id"].astype(str).tolist().index)
    # the new session is picked and its first example shown
    assert at.selectbox(key="review_session").value == session.id
    assert any(h.value.startswith("Example 1 of 3") for h in at.subheader)
    # the same name again is refused with a message
    at.button(key="review_create").click().run()
    assert any("already exists" in e.value for e in at.error)


def test_sessions_from_a_region_a_filter_and_the_top_of_a_score(use_analysed_workspace, review_database):
    at = open_review()
    examples = run_examples(at)
    region = examples["region"].value_counts().index[-1]
    create_session(at, "a region", source="A data-map region", region=region)
    store = store_of(review_database)
    session = store.get_session("a region")
    assert set(store.session_items(session.id)["example_id"]) == set(examples.loc[examples["region"] == region, "id"])
    assert session.source == f"data-map region: {region}"

    top_session(at, review_database, n=5, score="loss")
    hardest = examples.sort_values("loss", ascending=False, kind="stable")["id"].head(5).tolist()
    assert store.session_items("top five")["example_id"].tolist() == hardest
    assert store.get_session("top five").source == "top 5 by loss (highest first)"

    at.radio(key="review_new_source").set_value("A filter").run()
    at.selectbox(key="review_new_filter_column").set_value("label").run()
    at.multiselect(key="review_new_filter_values_label").set_value(["malignant"]).run()
    at.text_input(key="review_new_name").set_value("malignant").run()
    at.button(key="review_create").click().run()
    assert store.get_session("malignant").n_items == int((examples["label"] == "malignant").sum())


def test_a_session_from_a_cluster(use_analysed_workspace, review_database):
    at = open_review()
    examples = run_examples(at)
    cluster = int(examples["cluster"].value_counts().index[0])
    at.radio(key="review_new_source").set_value("A cluster").run()
    at.selectbox(key="review_new_cluster_coarse").set_value(cluster).run()
    at.text_input(key="review_new_name").set_value("biggest cluster").run()
    at.button(key="review_create").click().run()
    session = store_of(review_database).get_session("biggest cluster")
    assert session.n_items == int((examples["cluster"] == cluster).sum())
    assert session.source.startswith(f"cluster {cluster} (")


def test_a_name_is_needed_before_reading_or_creating(use_analysed_workspace, review_database):
    store_of(review_database).create_session("alice's", ["x"], owner="alice", fingerprint="f", classes=["a"])
    at = open_review(reviewer=None)
    assert any("Enter your name in the sidebar (*Your name*) to open review sessions" in w.value for w in at.warning)
    assert not [b for b in at.button if b.key == "review_create"]  # nothing of the store is shown
    # a look-alike of another name (Cyrillic "а") is refused, and still nothing is shown
    at.sidebar.text_input(key=state.REVIEWER).set_value("\u0430lice").run()
    assert any("mixes letters of several scripts" in e.value for e in at.sidebar.error)
    assert not [b for b in at.button if b.key == "review_create"]
    # the sidebar field sets it, normalised
    at.sidebar.text_input(key=state.REVIEWER).set_value("  Carol ").run()
    create_session(at, "named", source="The top of a score", score="loss", top_n=3)
    assert store_of(review_database).get_session("named").owner == "carol"


def test_two_reviewers_a_conflict_and_the_owners_adjudication(use_analysed_workspace, review_database):
    alice = open_review("alice")
    alice.text_input(key="review_new_reviewers").set_value("Bob").run()
    top_session(alice, review_database, n=4)
    store = store_of(review_database)
    items = store.session_items("top five")["example_id"].tolist()
    session_id = store.get_session("top five").id
    labels = run_examples(alice).set_index("id")["label"]

    # alice keeps the first (quick key), relabels the second (form) and moves on
    alice.button(key="review_quick_keep").click().run()
    assert alice.number_input(key=f"review_position_{session_id}").value == 2
    other = "malignant" if labels[items[1]] == "benign" else "benign"
    alice.radio(key=f"review_decision_{session_id}_2").set_value("relabel")  # a form: sent on submit
    alice.selectbox(key=f"review_new_label_{session_id}_2").set_value(other)
    alice.text_input(key=f"review_note_{session_id}_2").set_value("looks malignant")
    alice.button(key="review_record_next").click().run()
    assert not alice.exception
    assert alice.number_input(key=f"review_position_{session_id}").value == 3
    assert any("Recorded Relabel → " in s.value for s in alice.success)

    # bob, in his own browser session, sees alice's decisions and disagrees on the first
    bob = open_review("bob")
    assert bob.selectbox(key="review_session").value == session_id
    shown = " ".join(texts(bob.markdown))
    assert "**alice**: Keep" in shown
    bob.button(key="review_quick_drop").click().run()
    bob.button(key="review_previous").click().run()  # back to the first: bob's decision shows
    assert "Your decision: **Drop**" in " ".join(texts(bob.markdown))
    # next undecided skips what bob decided
    bob.button(key="review_next_undecided").click().run()
    assert bob.number_input(key=f"review_position_{session_id}").value == 2
    bob.button(key="review_quick_keep").click().run()  # keep vs alice's relabel: a second conflict

    conflicts = store.conflicts(session_id)
    assert conflicts["example_id"].tolist() == items[:2]

    # bob is not the owner: the conflicts are listed, no adjudication control
    bob.radio(key="review_view").set_value("Agreement and conflicts").run()
    assert not bob.exception
    listed = [df.value for df in bob.dataframe if "decisions" in df.value.columns][0]
    assert listed["id"].tolist() == items[:2]
    assert any("Only the session's owner, alice, or an admin" in i.value for i in bob.info)
    assert not [b for b in bob.button if b.key and b.key.startswith("adjudicate_submit_")]
    pairs = [df.value for df in bob.dataframe if "cohen_kappa" in df.value.columns][0]
    assert pairs.iloc[0]["n_items"] == 2 and pairs.iloc[0]["percent_agreement"] == 0.0

    # alice adjudicates the first conflict: drop
    alice.radio(key="review_view").set_value("Agreement and conflicts").run()
    alice.selectbox(key=f"adjudicate_choice_{session_id}_0").set_value("drop")
    alice.text_input(key=f"adjudicate_note_{session_id}_0").set_value("bob is right")
    alice.button(key=f"adjudicate_submit_{session_id}_0").click().run()
    assert not alice.exception
    assert store.conflicts(session_id)["example_id"].tolist() == [items[1]]
    outcome = store.outcome(session_id).set_index("example_id")
    assert outcome.loc[items[0], "final_decision"] == "drop"
    assert outcome.loc[items[0], "decided_by"] == "adjudication"
    history = store.history(session_id, items[0])
    assert history["kind"].tolist()[-1] == "adjudication" and history["note"].tolist()[-1] == "bob is right"


def test_export_of_the_outcome_applies_drops_and_relabels(use_analysed_workspace, review_database):
    at = open_review("alice")
    top_session(at, review_database, name="export me", n=4)
    store = store_of(review_database)
    items = store.session_items("export me")["example_id"].tolist()
    labels = run_examples(at).set_index("id")["label"]
    other = "malignant" if labels[items[1]] == "benign" else "benign"
    store.record_decision("export me", items[0], "alice", "drop")
    store.record_decision("export me", items[1], "alice", "relabel", new_label=other)
    store.record_decision("export me", items[2], "alice", "keep")

    at.radio(key="review_view").set_value("Export").run()
    assert at.radio(key="review_export_what").value == "The session's outcome"
    at.multiselect(key="review_export_scores").set_value(["loss", "region"]).run()
    at.text_input(key="review_export_name").set_value("test-outcome-export").run()
    at.button(key="review_export_write").click().run()
    assert not at.exception, at.exception
    exports = use_analysed_workspace / "exports"
    frame = pd.read_csv(exports / "test-outcome-export.csv")
    assert frame["id"].tolist() == items[1:]  # the drop is gone
    assert frame.set_index("id").loc[items[1], "label"] == other
    assert frame.set_index("id").loc[items[1], "original_label"] == labels[items[1]]
    assert {"loss", "region", "final_decision", "reviewer_decisions"} <= set(frame.columns)
    assert frame.set_index("id").loc[items[3], "final_decision"] == "undecided"
    manifest = json.loads((exports / "test-outcome-export.csv.manifest.json").read_text())
    assert manifest["session"]["name"] == "export me" and manifest["outcome_applied"] is True
    assert manifest["decision_counts"]["alice"] == {"drop": 1, f"relabel:{other}": 1, "keep": 1}
    assert manifest["rows"] == 3
    assert manifest["issue_counts"] and "near_duplicate" in manifest["issue_counts"]  # the run's data issues
    shown = " ".join(c.value for c in at.code)
    assert "test-outcome-export.csv.manifest.json" in shown

    # a download of the same, in JSON Lines
    at.radio(key="review_export_format").set_value("jsonl").run()
    at.button(key="review_export_prepare").click().run()
    assert not at.exception
    prepared = at.session_state["review_prepared_export"][1]
    lines = [json.loads(line) for line in prepared.data.decode().splitlines()]
    assert [line["id"] for line in lines] == items[1:]
    assert prepared.manifest["file_format"] == "jsonl"
    assert len(at.get("download_button")) == 2


def test_export_of_the_selection_without_a_session(use_analysed_workspace, review_database):
    at = open_review("alice")
    examples = run_examples(at)
    fingerprint = at.session_state[state.DATASET].fingerprint
    chosen = examples["id"].astype(str).head(7).tolist()
    at.session_state[state.SELECTIONS] = {fingerprint: Selection(frozenset(chosen), "hardness")}
    at.run()
    assert at.radio(key="review_export_what").value == "Other examples"
    at.text_input(key="review_export_name").set_value("test-selection-export").run()
    at.radio(key="review_export_format").set_value("parquet").run()
    at.button(key="review_export_write").click().run()
    frame = pd.read_parquet(use_analysed_workspace / "exports" / "test-selection-export.parquet")
    assert frame["id"].tolist() == chosen
    manifest = json.loads((use_analysed_workspace / "exports" / "test-selection-export.parquet.manifest.json")
                          .read_text())
    assert manifest["selection"] == "selection (hardness)" and manifest["session"] is None


def test_bad_input_gets_clear_messages(use_analysed_workspace, review_database):
    at = open_review("alice")
    top_session(at, review_database, name="bad input", n=3)
    session_id = store_of(review_database).get_session("bad input").id
    items = store_of(review_database).session_items(session_id)["example_id"].tolist()
    label = run_examples(at).set_index("id")["label"][items[0]]

    # a relabel is offered only to the dataset's other classes
    assert at.selectbox(key=f"review_new_label_{session_id}_1").options == [c for c in ("benign", "malignant") if c != label]

    # HTML in a note is stored as typed and shown escaped
    note = "<b>bold</b> <script>alert(1)</script> [link](http://example.com)"
    at.radio(key=f"review_decision_{session_id}_1").set_value("flag")
    at.text_input(key=f"review_note_{session_id}_1").set_value(note)
    at.button(key="review_record").click().run()
    assert store_of(review_database).history(session_id, items[0])["note"].tolist() == [note]
    shown = [m.value for m in at.markdown if "bold" in m.value]
    assert shown and all("<b>" not in m and "\\<b\\>" in m and "\\[link\\]" in m for m in shown)
    assert not [m for m in at.markdown if m.allow_html and "bold" in m.value]

    # a 100 KB note is refused with a message, and nothing is recorded
    at.text_input(key=f"review_note_{session_id}_1").set_value("x" * 100_000)
    at.button(key="review_record").click().run()
    assert any("the limit is 10,000" in e.value for e in at.error)
    assert len(store_of(review_database).history(session_id, items[0])) == 1


AUTH_SECRETS = {"redirect_uri": "http://localhost:8501/oauth2callback", "cookie_secret": "x" * 32,
                "client_id": "cartographer", "client_secret": "secret",
                "server_metadata_url": "http://127.0.0.1:9/.well-known/openid-configuration"}


@pytest.fixture
def team_server(monkeypatch, use_analysed_workspace):
    """The operator's settings of a team server (data roots are required in team mode)."""
    monkeypatch.setenv("CARTOGRAPHER_DATA_ROOTS", f"{ROOT / 'sample_data'}:{use_analysed_workspace}")
    monkeypatch.setenv("CARTOGRAPHER_ADMINS", "Ada@example.org")


def open_signed_in(*, secrets: dict | None = None) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=120)
    for key, value in (secrets or {}).items():
        at.secrets[key] = value
    at.session_state[state.DATASET_CHOICE] = sample_by_key(SAMPLE).title
    at.run()
    at.switch_page(PAGE).run()
    assert not at.exception, at.exception
    return at


def test_the_login_names_the_reviewer_and_the_name_box_disappears(team_server, review_database, monkeypatch):
    import streamlit

    at = open_signed_in(secrets={"auth": AUTH_SECRETS})
    # not signed in: a Sign in button, no name box, nothing of the review store
    assert not [t for t in at.sidebar.text_input if t.key == state.REVIEWER]
    assert [b for b in at.sidebar.button if b.key == "identity_sign_in"]
    assert any("Sign in (in the sidebar) to open review sessions" in i.value for i in at.info)
    assert not [b for b in at.button if b.key == "review_create"]

    monkeypatch.setattr(streamlit, "user", {"is_logged_in": True, "email": "ADA@example.org", "name": "Ada"})
    at = open_signed_in(secrets={"auth": AUTH_SECRETS})
    assert not [t for t in at.sidebar.text_input if t.key == state.REVIEWER]
    assert any("ada@example\\.org" in c.value.replace("\u2060", "") for c in at.sidebar.caption)
    # a typed name in session state is ignored once a sign-in is configured
    at.session_state[state.REVIEWER] = "mallory"
    create_session(at, "signed in", source="The top of a score", score="loss", top_n=2)
    assert store_of(review_database).get_session("signed in").owner == "ada@example.org"
    assert [e for e in at.expander if e.label == "Team"]  # ada is an admin (CARTOGRAPHER_ADMINS)


def test_a_trusted_proxy_header_names_the_reviewer(team_server, review_database, monkeypatch):
    from ui import identity

    monkeypatch.setenv("CARTOGRAPHER_TRUSTED_USER_HEADER", "X-Forwarded-Email")
    at = open_signed_in()
    assert not [t for t in at.sidebar.text_input if t.key == state.REVIEWER]
    assert any("X-Forwarded-Email is missing" in w.value for w in at.sidebar.warning)
    assert any("Sign in (in the sidebar)" in i.value for i in at.info)

    store = store_of(review_database)
    store.create_session("ada's", run_examples(at)["id"].astype(str).head(3).tolist(), owner="ada@example.org",
                         fingerprint=at.session_state[state.DATASET].fingerprint, classes=["benign", "malignant"],
                         reviewers=["bob@example.org"])
    headers = {"X-Forwarded-Email": "mallory@example.org"}
    monkeypatch.setattr(identity, "_request_headers", lambda: headers)
    at = open_signed_in()
    assert any("mallory@example\\.org" in c.value.replace("\u2060", "") for c in at.sidebar.caption)
    # mallory (a viewer) reads the session but has no decision controls, and the store refuses her
    assert any("You are not a reviewer of this session" in i.value for i in at.info)
    assert not [b for b in at.button if b.key == "review_quick_keep"]
    with pytest.raises(Exception, match="mallory@example.org is not a reviewer"):
        store.record_decision("ada's", run_examples(at)["id"].astype(str).iloc[0], "mallory@example.org", "drop")
    headers["X-Forwarded-Email"] = "Bob@Example.org"
    at = open_signed_in()
    at.button(key="review_quick_keep").click().run()
    assert store.history("ada's")["reviewer"].tolist() == ["bob@example.org"]


@pytest.mark.parametrize("sample", ["debian-packages", "digits"])
def test_text_and_images_show_their_preview_and_neighbours(use_analysed_workspace, review_database, sample):
    at = open_review(sample=sample)
    create_session(at, f"{sample} review", source="The top of a score", score="loss", top_n=3)
    examples = run_examples(at)
    first = examples.sort_values("loss", ascending=False, kind="stable").iloc[0]
    neighbours = [df.value for df in at.dataframe if "distance" in df.value.columns][0]
    assert len(neighbours) == 8 and first["id"] not in set(neighbours["id"])
    assert (neighbours["distance"].diff().dropna() >= 0).all()
    if sample == "digits":
        assert len(at.get("image")) == 1 and "preview" in neighbours.columns
    else:
        assert escape_markdown(first["text"]) in [m.value for m in at.markdown]  # in full, escaped
