"""Loading the Plotly chart code in the browser ahead of the first chart.

Streamlit's frontend fetches and runs its Plotly chunk (4.7 MB of JavaScript) the first time a
page shows a Plotly chart: 0.8 s in headless Chromium on two cores. The Overview shows none (its
class balance is a table), so that cost would land on the first page with charts. Every page
therefore asks the browser, once it is idle and a moment after the page has drawn, to import
that chunk; the chart pages then find it loaded.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path

import streamlit as st

__all__ = ["plotly_chunk", "preload_charts"]


@functools.lru_cache(maxsize=1)
def plotly_chunk() -> str | None:
    """The file name of Streamlit's Plotly chunk (it carries a content hash), or None."""
    folder = Path(st.__file__).parent / "static" / "static" / "js"
    found = sorted(folder.glob("PlotlyChart.*.js"))
    return found[0].name if len(found) == 1 else None


_SCRIPT = """<script>
(() => {
  if (window.cartographerPreloaded) return;
  window.cartographerPreloaded = true;
  const main = [...document.scripts].find((s) => /static\\/js\\/index\\.[^/]*\\.js/.test(s.src));
  if (!main) return;
  const url = main.src.replace(/index\\.[^/]*\\.js.*$/, %s);
  const idle = window.requestIdleCallback || ((f) => setTimeout(f, 1));
  setTimeout(() => idle(() => import(url).catch(() => {})), 1500);
})();
</script>"""


def preload_charts() -> None:
    """Have the browser load the Plotly chunk once it is idle (nothing when Streamlit has none)."""
    chunk = plotly_chunk()
    if chunk is None:
        return
    with st.sidebar:
        st.html(_SCRIPT % json.dumps(chunk), unsafe_allow_javascript=True)
