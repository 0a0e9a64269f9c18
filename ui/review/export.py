"""Exports from the Review page: a session's outcome, the selection or a filter, as CSV, Parquet
or JSON Lines, downloaded or written to the workspace, with a manifest."""

from __future__ import annotations

import streamlit as st

from analytics.names import without_map_columns
from ui import actions
from ui.figures import escape_markdown
from ui.identity import current_user
from ui.review.common import ReviewRun, file_stem, say_error
from ui.review.picker import pick_examples

__all__ = ["FORMATS", "OUTCOME", "export_view"]

OUTCOME = "The session's outcome"
FORMATS = {"csv": "CSV", "parquet": "Parquet", "jsonl": "JSON Lines"}
PREPARED = "review_prepared_export"  # session-state key of the download prepared last


def export_view(page: ReviewRun, session) -> None:
    """What to export (the session's outcome, when there is a session, or other examples), its
    columns, format and name, and the two ways out: a download or a file in the workspace."""
    sources = ([OUTCOME] if session is not None else []) + ["Other examples"]
    source = st.radio("Export", sources, horizontal=True, key="review_export_what")
    apply_outcome, ids, described = False, None, ""
    if source == OUTCOME:
        apply_outcome = st.checkbox("Apply the outcome: leave out drops, apply relabels", value=True,
                                    key="review_export_apply",
                                    help="Examples in conflict, undecided or flagged stay as they are; their "
                                         "final_decision column says so. Unticked: every example of the session "
                                         "with its decisions.")
        default_stem = f"{page.dataset_stem}-{session.name}-{'outcome' if apply_outcome else 'decisions'}"
    else:
        ids, described = pick_examples(page, "review_export")
        default_stem = f"{page.dataset_stem}-{described.split(' (')[0].split(':')[0]}"
    score_columns, fmt, stem = _export_options(page, source, default_stem)
    if ids is not None and not ids:
        st.info("Nothing to export: no example matches.")
        return
    signature = (source, session.id if session is not None else None, apply_outcome, hash(tuple(ids or ())),
                 tuple(score_columns), fmt, stem)
    buttons = st.container(horizontal=True)
    wants_download = buttons.button("Prepare the download", key="review_export_prepare", icon=":material/download:")
    wants_file = buttons.button("Write to the workspace", key="review_export_write", icon=":material/save:",
                                help="For large exports: the file and its manifest go to the workspace's "
                                     "exports/ folder.")
    if wants_download or wants_file:
        try:
            frame, provenance = actions.export_table(
                page.dataset, page.examples, actor=current_user(), ids=ids, store=page.store,
                session=session.id if source == OUTCOME else None,
                score_columns=score_columns, apply_outcome=apply_outcome, description=described,
                issue_counts=(page.run.manifest.get("issues") or {}).get("counts"))
            if wants_download:
                st.session_state[PREPARED] = (signature, actions.export_download(frame, provenance, fmt))
            else:
                _write_to_workspace(frame, provenance, fmt, stem)
        except page.user_errors as exc:
            say_error(exc)
    _prepared_download(signature, stem)


def _export_options(page: ReviewRun, source: str, default_stem: str) -> tuple[list[str], str, str]:
    """The score columns to add, the format and the file name (without extension)."""
    extra = [c for c in without_map_columns(page.examples.columns) if c not in page.dataset.table.columns]
    columns_column, format_column = st.columns([3, 1])
    score_columns = columns_column.multiselect(
        "Score columns", extra, key="review_export_scores",
        default=[c for c in ("region", "label_issue") if c in extra],
        help="Added to the dataset's own columns" + (" and the decisions." if source == OUTCOME else "."))
    fmt = format_column.radio("Format", list(FORMATS), format_func=FORMATS.get, key="review_export_format")
    stem = file_stem(st.text_input("File name", value=file_stem(default_stem), key="review_export_name",
                                   help="Without the extension; the manifest goes beside it as "
                                        "<file>.manifest.json."))
    return score_columns, fmt, stem


def _write_to_workspace(frame, provenance, fmt: str, stem: str) -> None:
    written = actions.export_to_workspace(frame, provenance, fmt, stem)
    if written.renamed:
        st.info(f"{escape_markdown(written.requested.name)} already exists and was left as it is; "
                f"this export is {escape_markdown(written.path.name)}.")
    st.success(f"Wrote {written.n_rows:,} rows and the manifest:")
    st.code(f"{written.path}\n{written.manifest_path}", language=None)


def _prepared_download(signature: tuple, stem: str) -> None:
    """The download buttons of the export prepared for these very settings, if any."""
    prepared = st.session_state.get(PREPARED)
    if prepared is None or prepared[0] != signature:
        return
    download = prepared[1]
    prepared_at = download.manifest["created_at"].replace("T", " ").replace("+00:00", " UTC")
    st.caption(f"Prepared {download.manifest['rows']:,} rows at {prepared_at} (prepare again after new "
               "decisions).")
    downloads = st.container(horizontal=True)
    downloads.download_button(f"Download {stem}{download.suffix}", download.data,
                              file_name=f"{stem}{download.suffix}", mime=download.mime_type,
                              key="review_export_download", on_click="ignore", type="primary")
    downloads.download_button("Download the manifest (JSON)", download.manifest_bytes,
                              file_name=f"{stem}{download.suffix}.manifest.json",
                              mime="application/json", key="review_export_manifest",
                              on_click="ignore")
