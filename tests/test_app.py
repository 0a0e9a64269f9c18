"""App tests (Streamlit AppTest): every page opens on every sample; bad input keeps it running.

Most tests start the app with session state preset (as the sidebar widgets would set it) and
run it once; the drop-missing-labels test clicks the real button.
"""

from __future__ import annotations


import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

from analytics.samples import SAMPLES
from tests.conftest import ROOT
from ui import state
from ui.navigation import PAGES

APP = str(ROOT / "app.py")
OPEN_PATH = "Open a file or folder…"


@pytest.fixture(autouse=True)
def clean_caches(clean_app_caches):
    yield


def run_app(*, page: str | None = None, **session) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=60)
    for key, value in session.items():
        at.session_state[key] = value
    at.run()
    if page:  # pages are known only after a first run has called st.navigation
        at.switch_page(page).run()
    return at


def test_first_run_opens_a_sample_on_the_overview():
    at = run_app()
    assert not at.exception
    assert at.title[0].value == "debian_packages.csv"
    assert [m.value for m in at.metric][:2] == ["1,549", "8"]
    assert any("1,549 examples" in s.value for s in at.sidebar.success)


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.url_path)
@pytest.mark.parametrize("sample", SAMPLES, ids=lambda s: s.key)
def test_every_page_opens_on_every_sample(sample, page, use_analysed_workspace):
    at = run_app(page=page.file, **{state.DATASET_CHOICE: sample.title})
    assert not at.exception, at.exception
    assert not at.error, [e.value for e in at.error]
    assert at.title, f"{page.title} shows no title for {sample.key}"
    assert at.session_state[state.DATASET].source == sample.path


def test_overview_of_the_image_sample_shows_balance_tables_and_thumbnails():
    at = run_app(**{state.DATASET_CHOICE: "Handwritten digits (images)"})
    assert at.title[0].value == "digits"
    balance = at.dataframe[0].value  # a bar per class, in a table
    assert list(balance.columns) == ["label", "count", "share"] and len(balance) == 10
    assert balance["count"].sum() == 1797 and abs(balance["share"].sum() - 1) < 1e-9
    assert len(at.dataframe) >= 3
    assert len(at.get("image")) == 10  # one thumbnail strip per class
    table = at.dataframe[-1].value
    assert table["preview"].str.startswith("data:image/png;base64,").all()


def test_a_path_that_does_not_exist_keeps_the_app_running(tmp_path):
    at = run_app(**{state.DATASET_CHOICE: OPEN_PATH, state.DATASET_PATH: str(tmp_path / "missing.csv")})
    assert not at.exception
    assert any("missing.csv: no such file or folder" in e.value for e in at.sidebar.error)
    assert any("Pick a bundled sample" in i.value for i in at.info)


def test_a_malformed_file_names_the_line(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"text": "a b", "label": "x"}\n{oops\n')
    at = run_app(**{state.DATASET_CHOICE: OPEN_PATH, state.DATASET_PATH: str(path)})
    assert not at.exception
    assert any("bad.jsonl: line 2 is not valid JSON" in e.value for e in at.sidebar.error)


def test_missing_labels_are_reported_with_an_offer_to_drop_them(tmp_path):
    path = tmp_path / "gaps.csv"
    pd.DataFrame({"text": [f"some words {i}" for i in range(6)],
                  "label": ["a", None, "b", "a", None, "b"]}).to_csv(path, index=False)
    at = run_app(**{state.DATASET_CHOICE: OPEN_PATH, state.DATASET_PATH: str(path)})
    assert any("2 rows with no label (rows 2, 5)" in e.value for e in at.sidebar.error)
    button = at.sidebar.button(key="drop_missing_button")
    assert button.label == "Drop the 2 rows without a label"
    button.click().run()
    assert not at.exception
    assert at.title[0].value == "gaps.csv"
    assert at.metric[0].value == "4"
    assert any("Dropped 2 rows" in i.value for i in at.info)


def test_choosing_the_label_column_by_hand(tmp_path):
    path = tmp_path / "nolabel.csv"
    pd.DataFrame({"review": [f"text number {i} here" for i in range(6)],
                  "verdict": ["good", "bad"] * 3}).to_csv(path, index=False)
    base = {state.DATASET_CHOICE: OPEN_PATH, state.DATASET_PATH: str(path)}
    at = run_app(**base)
    assert any("no label column found" in e.value and "'verdict'" in e.value for e in at.sidebar.error)
    assert "verdict" in at.sidebar.selectbox(key=f"role_label_{path}").options
    at = run_app(**base, **{f"role_label_{path}": "verdict"})
    assert not at.sidebar.error
    assert at.title[0].value == "nolabel.csv"
    assert at.metric[1].value == "2"


def test_hostile_labels_reach_the_overview_as_data_never_as_markup(tmp_path):
    path = tmp_path / "hostile.csv"
    pd.DataFrame({"text": ["<img src=x onerror=alert(1)> hello there", "**bold** [link](http://x)"] * 2,
                  "label": ["<b>a</b>", "b", "<b>a</b>", "b"]}).to_csv(path, index=False)
    at = run_app(**{state.DATASET_CHOICE: OPEN_PATH, state.DATASET_PATH: str(path)})
    assert not at.exception
    # the class balance is a table: its cells are drawn as text (a canvas grid), the label kept as it is
    assert sorted(at.dataframe[0].value["label"]) == ["<b>a</b>", "b"]
    assert not at.get("plotly_chart") and not [m for m in at.markdown if "<b>a</b>" in m.value]


def test_warnings_go_to_the_log_not_to_the_user(caplog, capsys):
    import warnings

    run_app()
    with caplog.at_level("WARNING", logger="py.warnings"):
        warnings.warn("torch-like: the given NumPy array is not writable", UserWarning, stacklevel=1)
    assert "torch-like: the given NumPy array is not writable" in caplog.text
    assert "not writable" not in capsys.readouterr().err



# --- the operator's rules: data roots, the image cap, checkpoints ---------------------------------

@pytest.fixture
def data_roots(tmp_path, monkeypatch):
    """CARTOGRAPHER_DATA_ROOTS set to one folder, with a secrets file outside it and a link to it inside."""
    root = tmp_path / "data"
    root.mkdir()
    secrets = tmp_path / "private" / "secrets.csv"
    secrets.parent.mkdir()
    pd.DataFrame({"id": ["1", "2"], "label": ["a", "b"], "text": ["password=hunter2", "x"]}).to_csv(
        secrets, index=False)
    (root / "link.csv").symlink_to(secrets)
    monkeypatch.setenv("CARTOGRAPHER_DATA_ROOTS", str(root))
    return root, secrets


@pytest.mark.parametrize("which", ["secrets", "link", "system folder", "device"])
def test_a_path_outside_the_data_roots_is_refused_and_nothing_opens(data_roots, which):
    root, secrets = data_roots
    typed = {"secrets": str(secrets), "link": str(root / "link.csv"), "system folder": "/etc",
             "device": "/dev/zero"}[which]
    at = run_app(**{state.DATASET_CHOICE: OPEN_PATH, state.DATASET_PATH: typed})
    assert not at.exception
    errors = " ".join(e.value for e in at.sidebar.error)
    assert f"{typed}: outside the data folders this server may open" in errors
    assert state.DATASET not in at.session_state
    shown = " ".join(str(e.value) for e in (*at.error, *at.sidebar.error, *at.sidebar.selectbox))
    assert "hunter2" not in shown and "passwd" not in shown
    if which == "link":
        assert "private" not in shown


def test_a_folder_over_the_image_cap_opens_only_when_asked(tmp_path, monkeypatch):
    from PIL import Image

    for label in ("cat", "dog"):
        (tmp_path / "pets" / label).mkdir(parents=True)
        for i in range(2):
            Image.new("RGB", (8, 8), (60 * i, 100 if label == "cat" else 0, 0)).save(
                tmp_path / "pets" / label / f"{i}.png")
    monkeypatch.setenv("CARTOGRAPHER_MAX_IMAGES", "3")
    at = run_app(**{state.DATASET_CHOICE: OPEN_PATH, state.DATASET_PATH: str(tmp_path / "pets")})
    assert any("holds more than 3 images" in e.value for e in at.sidebar.error)
    assert state.DATASET not in at.session_state
    at.sidebar.button(key="dataset_open_anyway_button").click().run()
    assert not at.exception
    assert at.session_state[state.DATASET].n_examples == 4


def test_checkpoint_settings_have_no_trust_box_and_refuse_a_command_as_architecture(tmp_path, use_analysed_workspace):
    import torch
    from safetensors.torch import save_file

    from tests.conftest import open_page

    save_file({"w": torch.zeros(2)}, str(tmp_path / "x.safetensors"))
    marker = tmp_path / "MARKER"
    at = open_page("views/data_map.py", "breast-cancer")
    at.selectbox(key="analysis_source").select("checkpoint").run()
    assert not [c for c in at.checkbox if "trust" in c.label.lower()]
    assert any("CARTOGRAPHER_TRUST_CHECKPOINTS" in c.value for c in at.caption)
    at.text_input(key="analysis_path").input(str(tmp_path / "x.safetensors"))
    at.text_input(key="analysis_architecture").input(f'subprocess:run{{"args": ["touch", "{marker}"]}}')
    at.button(key="analysis_apply").click().run()
    assert not at.exception
    assert any("not a subclass of torch.nn.Module" in e.value for e in at.error)
    assert not marker.exists()


def test_unexpected_errors_show_no_traceback_or_server_paths():
    """An exception the app did not expect reaches the browser as its type only (the server log
    keeps the message and the traceback): config.toml sets client.showErrorDetails."""
    import tomllib

    config = tomllib.loads((ROOT / ".streamlit" / "config.toml").read_text())
    assert config["client"]["showErrorDetails"] in ("type", "none")


def test_the_server_does_not_force_a_full_garbage_collection_after_every_run():
    """Streamlit's default collects all generations after each script run; with torch, numba and
    scikit-learn loaded that held the GIL 0.2-0.45 s per run, most of the server's time under
    twelve reviewers (docs/BENCHMARKS.md section 5). The option must be one Streamlit reads."""
    import subprocess
    import sys
    import tomllib

    config = tomllib.loads((ROOT / ".streamlit" / "config.toml").read_text())
    assert config["runner"]["postScriptGC"] is False
    read = subprocess.run([sys.executable, "-c", "from streamlit import config; "
                           "print(config.get_option('runner.postScriptGC'))"],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert read.stdout.split()[-1:] == ["False"], read.stderr[-2000:]
