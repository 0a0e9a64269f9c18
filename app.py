"""Data Cartographer: entry page, navigation and the dataset sidebar.

Start it with ``make run`` (http://127.0.0.1:8501).
"""

import logging
import warnings
from pathlib import Path

import streamlit as st

from ui.jobs import warm_up_umap
from ui.navigation import DEFAULT_PAGE_INTERNAL_PATH, PAGES
from ui.preload import preload_charts
from ui.sidebar import dataset_sidebar


def _log_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """Python warnings (torch's, numpy's…) go to the server's log, never to a user."""
    logging.getLogger("py.warnings").warning(
        "%s", warnings.formatwarning(message, category, filename, lineno, line).rstrip())


warnings.showwarning = _log_warning  # every run: a test harness may have restored the default

# A local icon: a Material or emoji favicon would make the browser fetch it from the internet.
st.set_page_config(page_title="Data Cartographer", layout="wide",
                   page_icon=str(Path(__file__).parent / "ui" / "assets" / "icon.png"))

home = PAGES[0]
navigation = st.navigation([
    st.Page(home.file, title=home.title, icon=home.icon, url_path=DEFAULT_PAGE_INTERNAL_PATH, default=True),
    *(st.Page(page.file, title=page.title, icon=page.icon, url_path=page.url_path) for page in PAGES[1:]),
    # "/overview" opens the Overview too (a hidden twin: the menu lists it once)
    st.Page(home.file, title=home.title, icon=home.icon, url_path=home.url_path, visibility="hidden"),
])
warm_up_umap()  # once per server process, in the background
dataset_sidebar()
preload_charts()  # the chart pages' code, loaded in the browser once it is idle
navigation.run()
