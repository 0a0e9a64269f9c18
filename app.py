"""Data Cartographer: entry page, navigation and the dataset sidebar.

Start it with ``make run`` (http://127.0.0.1:8501).
"""

from pathlib import Path

import streamlit as st

from ui.jobs import warm_up_umap
from ui.navigation import PAGES
from ui.sidebar import dataset_sidebar

# A local icon: a Material or emoji favicon would make the browser fetch it from the internet.
st.set_page_config(page_title="Data Cartographer", layout="wide",
                   page_icon=str(Path(__file__).parent / "ui" / "assets" / "icon.png"))

navigation = st.navigation([
    st.Page(page.file, title=page.title, icon=page.icon, url_path=page.url_path, default=i == 0)
    for i, page in enumerate(PAGES)
])
warm_up_umap()  # once per server process, in the background
dataset_sidebar()
navigation.run()
