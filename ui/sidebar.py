"""The sidebar: choose a bundled sample or open a path, set column roles, load the dataset."""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from analytics.access import AccessError, Policy, resolve_data_path
from analytics.datasets import (AUTO, NO_COLUMN, ColumnRoles, DatasetError, MissingLabelsError, count_images,
                                source_stamp)
from analytics.pipeline import DamagedRunError, RunError, is_run_dir
from analytics.samples import SAMPLES
from ui import cached, state
from ui.figures import escape_markdown
from ui.identity import identity_sidebar
from ui.policy import policy as operator_policy

_OPEN_PATH = "Open a file or folder…"
_AUTO_LABEL, _NONE_LABEL = "(detect)", "(none)"
_ROLES = ("label", "id", "text", "image", "split")
_ENCODINGS = ("utf-8", "latin-1", "cp1252", "utf-16")
_IMAGE_COUNT = "dataset_image_count"  # ((folder, stamp), images counted up to the cap + 1)
_OPEN_ANYWAY = "dataset_open_anyway"  # folders over the image cap the user chose to open


def dataset_sidebar() -> None:
    """Draw the dataset picker and put the loaded dataset (or the error) in session state; then
    who is reviewing."""
    _dataset_picker()
    reviewer_sidebar()


def _dataset_picker() -> None:
    sidebar = st.sidebar
    sidebar.title("Data Cartographer")
    titles = [s.title for s in SAMPLES] + [_OPEN_PATH]
    choice = sidebar.selectbox("Dataset", titles, key=state.DATASET_CHOICE,
                               help="Bundled samples open instantly; or open your own data.")
    encoding = "utf-8"
    if choice == _OPEN_PATH:
        path, encoding = _opened_path()
        if path is None:
            return
        default_roles = ColumnRoles()
    else:
        sample = SAMPLES[titles.index(choice)]
        path, default_roles = str(sample.path), sample.roles
        st.session_state.pop(state.OPENED_RUN, None)
        sidebar.caption(sample.description)

    if is_run_dir(path):
        _open_run(path)
        return
    st.session_state.pop(state.OPENED_RUN, None)
    stamp = source_stamp(path)
    roles = _role_pickers(path, encoding, stamp, default_roles)
    drop_missing = path in st.session_state.setdefault(state.DROP_MISSING, set())
    progress = sidebar.empty()
    try:
        dataset = cached.load_dataset(
            path, tuple(roles.as_dict().items()), drop_missing, encoding, stamp,
            progress=lambda fraction, message: progress.progress(min(fraction, 1.0), text=message),
        )
    except MissingLabelsError as exc:
        progress.empty()
        _set_result(None, str(exc))
        sidebar.error(str(exc))
        if sidebar.button(f"Drop the {exc.count} rows without a label", key="drop_missing_button"):
            st.session_state[state.DROP_MISSING].add(path)
            st.rerun()
        return
    except DatasetError as exc:
        progress.empty()
        _set_result(None, str(exc))
        sidebar.error(str(exc))
        return
    progress.empty()
    _set_result(dataset, None)
    sidebar.success(f"{escape_markdown(dataset.name)}: {dataset.n_examples:,} examples, {len(dataset.classes)} classes")


def _opened_path() -> tuple[str | None, str]:
    """The path the user typed, resolved under the operator's rules, and the text encoding
    chosen; the path is None (and the sidebar says why, if anything is wrong) when there is
    nothing to open yet."""
    sidebar = st.sidebar
    path = sidebar.text_input("Path to a file or image folder", key=state.DATASET_PATH,
                              placeholder="/data/reviews.csv",
                              help="CSV, TSV, Parquet, JSON Lines, a folder with one sub-folder "
                                   "of images per class, or a run folder written by "
                                   "`cartographer analyze`.").strip()
    encoding = sidebar.selectbox("Text encoding", _ENCODINGS, key=state.ENCODING)
    if not path:
        _set_result(None, None)
        return None, encoding
    rules = operator_policy()
    try:  # the operator's rules before anything is read; the resolved path is used from here on
        path = str(resolve_data_path(path, rules, what="dataset"))
    except AccessError as exc:
        _set_result(None, str(exc))
        sidebar.error(str(exc))
        return None, encoding
    if Path(path).is_dir() and not is_run_dir(path) and not _image_count_allowed(path, rules):
        return None, encoding
    return path, encoding


def _image_count_allowed(path: str, rules: Policy) -> bool:
    """A folder with more images than the operator's cap opens only after the user says so."""
    opened_anyway = st.session_state.setdefault(_OPEN_ANYWAY, set())
    if path in opened_anyway:
        return True
    key = (path, source_stamp(path))
    counted = st.session_state.get(_IMAGE_COUNT)
    if counted is None or counted[0] != key:
        counted = st.session_state[_IMAGE_COUNT] = (key, count_images(path, stop_after=rules.max_images))
    if counted[1] <= rules.max_images:
        return True
    message = (f"{Path(path).name}: holds more than {rules.max_images:,} images, the most this server opens "
               "without asking (CARTOGRAPHER_MAX_IMAGES). Checking them all may take a long time.")
    _set_result(None, message)
    st.sidebar.error(message)
    if st.sidebar.button("Open anyway", key="dataset_open_anyway_button"):
        opened_anyway.add(path)
        st.rerun()
    return False


def _open_run(path: str) -> None:
    """A run folder written by `cartographer analyze` (or the app): its dataset and results."""
    try:
        run = cached.load_run(str(Path(path).resolve()), cached.run_stamp(path))
    except RunError as exc:
        message = f"{exc} {cached.RECOMPUTE_HINT}" if isinstance(exc, DamagedRunError) else str(exc)
        _set_result(None, message)
        st.sidebar.error(message)
        return
    st.session_state[state.OPENED_RUN] = run
    _set_result(run.dataset, None)
    st.sidebar.success(f"Run of {escape_markdown(run.dataset.name)}: {run.dataset.n_examples:,} examples, "
                       f"{len(run.dataset.classes)} classes (analysed {run.manifest['created']})")


def _role_pickers(path: str, encoding: str, stamp: tuple, defaults: ColumnRoles) -> ColumnRoles:
    columns = cached.peek_columns(path, encoding, stamp) if not Path(path).is_dir() else []
    if not columns:
        return defaults
    chosen = {}
    with st.sidebar.expander("Column roles", expanded=False):
        st.caption("Which column holds what. '(detect)' guesses from names and content.")
        for role in _ROLES:
            default = getattr(defaults, role)
            options = [_AUTO_LABEL, _NONE_LABEL] + columns
            index = options.index(default) if default in options else 0
            picked = st.selectbox(role, options, index=index, key=f"role_{role}_{path}")
            chosen[role] = AUTO if picked == _AUTO_LABEL else NO_COLUMN if picked == _NONE_LABEL else picked
        annotators = st.multiselect(
            "annotator", columns, default=[c for c in defaults.annotator if c in columns],
            key=f"role_annotator_{path}",
            help="Several annotators' label columns, one each (never detected; an empty cell means not "
                 "labelled). Their consensus and each annotator's quality are computed; with no label "
                 "column, each row's label is their majority vote.")
    return ColumnRoles(**chosen, annotator=tuple(annotators))


def _set_result(dataset, error: str | None) -> None:
    if dataset is None:
        st.session_state.pop(state.DATASET, None)
    else:
        st.session_state[state.DATASET] = dataset
    if error is None:
        st.session_state.pop(state.DATASET_ERROR, None)
    else:
        st.session_state[state.DATASET_ERROR] = error


def reviewer_sidebar() -> None:
    """Who is reviewing: the sign-in panel when the deployment configures one (``st.login`` or a
    trusted proxy header), else a name typed here (:mod:`ui.identity`)."""
    identity_sidebar()
