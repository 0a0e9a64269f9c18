"""The app's pages, in menu order: one list that app.py and the tests both read."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class PageSpec:
    file: str        # relative to app.py; the folder is views/, not pages/: a folder named
                     # pages/ makes Streamlit fall back to its legacy multipage mode on a deep link
    title: str
    url_path: str
    icon: str


# The default page is served at "/", and Streamlit keys a page by its url_path: the default page
# is registered under this internal path so that a hidden twin can serve its own path
# ("/overview") as a deep link without appearing twice in the menu.
DEFAULT_PAGE_INTERNAL_PATH = "start"

PAGES: tuple[PageSpec, ...] = (
    PageSpec("views/overview.py", "Overview", "overview", ":material/table_chart:"),
    PageSpec("views/map.py", "Map", "map", ":material/scatter_plot:"),
    PageSpec("views/data_map.py", "Data map", "data-map", ":material/insights:"),
    PageSpec("views/hardness.py", "Hardness", "hardness", ":material/leaderboard:"),
    PageSpec("views/subpopulations.py", "Subpopulations", "subpopulations", ":material/workspaces:"),
    PageSpec("views/issues.py", "Issues", "issues", ":material/report:"),
    PageSpec("views/review.py", "Review", "review", ":material/rate_review:"),
    PageSpec("views/impact.py", "Impact", "impact", ":material/science:"),
)
