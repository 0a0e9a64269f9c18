"""Figures and files for the curation-impact experiments (:mod:`analytics.impact`).

The figures are Plotly figure specifications — plain ``{"data": [...], "layout": {...}}``
dictionaries — so the engine needs no plotting library: the app draws them with
``plotly.graph_objects.Figure(spec)`` and the command line writes them as self-contained HTML.
Dataset text (cluster names) is HTML-escaped, since Plotly renders a subset of HTML in labels.
"""

from __future__ import annotations

import html
import importlib.util
import json
from pathlib import Path

import pandas as pd

from analytics.impact import RANDOM, ImpactResult
from analytics.workspace import atomic_write_text

__all__ = ["figure_spec", "figure_html", "write_report", "report_stem"]

# Plotly's default qualitative colours, in order.
_COLOURS = ("#636efa", "#ef553b", "#00cc96", "#ab63fa", "#ffa15a", "#19d3f3", "#ff6692", "#b6e880",
            "#ff97ff", "#fecb52")
_RANDOM_COLOUR = "#555555"
_DIRECTION_TITLES = {"drop-hardest": "drop the hardest first", "drop-easiest": "drop the easiest first",
                     "window": "keep a window of the ranking"}
_VARIANT_COLOURS = {"original": "#7f7f7f", "curated": "#00a36c", "random removal": "#ef553b"}


def _finite(values) -> list:
    """Floats with NaN as None (JSON null: a gap in the line)."""
    return [None if v is None or pd.isna(v) else float(v) for v in values]


def _rgba(colour: str, alpha: float) -> str:
    red, green, blue = (int(colour[i:i + 2], 16) for i in (1, 3, 5))
    return f"rgba({red},{green},{blue},{alpha})"


def _layout(title: str, x_title: str, y_title: str, **extra) -> dict:
    return {"title": {"text": html.escape(title)}, "plot_bgcolor": "white", "height": 480,
            "margin": {"l": 60, "r": 20, "t": 60, "b": 60}, "hovermode": "closest",
            "xaxis": {"title": {"text": x_title}, "gridcolor": "#eeeeee", "zeroline": False},
            "yaxis": {"title": {"text": y_title}, "gridcolor": "#eeeeee", "zeroline": False, "tickformat": ".0%"},
            "legend": {"title": {"text": extra.pop("legend_title", "")}}, **extra}


def _error_bars(group: pd.DataFrame) -> dict:
    return {"type": "data", "symmetric": False, "visible": True,
            "array": _finite((group["ci_high"] - group["accuracy"]).clip(lower=0)),
            "arrayminus": _finite((group["accuracy"] - group["ci_low"]).clip(lower=0))}


def pruning_figure(table: pd.DataFrame, info: dict) -> dict:
    """Accuracy against kept fraction, one line per score with its confidence band."""
    data = []
    for position, (score, group) in enumerate(table.groupby("score", sort=False)):
        group = group.sort_values("kept_fraction")
        colour = _RANDOM_COLOUR if score == RANDOM else _COLOURS[position % len(_COLOURS)]
        name = html.escape(str(score))
        x = group["kept_fraction"].tolist()
        if group["ci_low"].notna().any():
            data.append({"type": "scatter", "x": x + x[::-1],
                         "y": _finite(group["ci_high"].tolist() + group["ci_low"].tolist()[::-1]),
                         "fill": "toself", "fillcolor": _rgba(colour, 0.15), "line": {"width": 0},
                         "hoverinfo": "skip", "showlegend": False, "legendgroup": name, "name": name})
        data.append({
            "type": "scatter", "mode": "lines+markers", "x": x, "y": _finite(group["accuracy"]), "name": name,
            "legendgroup": name, "line": {"color": colour, "width": 2, "dash": "dash" if score == RANDOM else "solid"},
            "marker": {"size": 6},
            "customdata": [_finite(row) for row in group[["ci_low", "ci_high", "n_train"]].itertuples(index=False)],
            "hovertemplate": "%{fullData.name}<br>kept %{x:.0%}: accuracy %{y:.2%}<br>"
                             "95% CI %{customdata[0]:.2%} – %{customdata[1]:.2%}<br>"
                             "%{customdata[2]:,.0f} training rows<extra></extra>",
        })
    direction = next((d for d in table["direction"] if d != RANDOM), RANDOM)
    title = _DIRECTION_TITLES.get(direction, "random pruning only")
    layout = _layout(f"Pruning curves: {title}", "kept fraction of the training rows",
                     "held-out accuracy", legend_title="score")
    layout["xaxis"].update(tickformat=".0%", range=[0, 1.03])
    return {"data": data, "layout": layout}


def easy_hard_figure(table: pd.DataFrame, info: dict) -> dict:
    """Accuracy on each bucket (x) for probes trained on each bucket or on all (bars)."""
    data = []
    for position, (train_on, group) in enumerate(table.groupby("train_on", sort=False)):
        colour = _RANDOM_COLOUR if train_on == "all" else _COLOURS[position % len(_COLOURS)]
        data.append({"type": "bar", "name": f"trained on {html.escape(str(train_on))}",
                     "x": [html.escape(str(v)) for v in group["evaluate_on"]], "y": _finite(group["accuracy"]),
                     "marker": {"color": colour}, "error_y": _error_bars(group),
                     "customdata": [[int(n)] for n in group["n_eval"]],
                     "hovertemplate": "%{fullData.name}, evaluated on %{x}: %{y:.2%} "
                                      "(%{customdata[0]:,} rows)<extra></extra>"})
    score = info.get("config", {}).get("score", "")
    layout = _layout(f"Easy to hard by {score}", "evaluated on", "held-out accuracy",
                     legend_title="probe", barmode="group")
    return {"data": data, "layout": layout}


def what_if_figure(table: pd.DataFrame, info: dict) -> dict:
    """The change in held-out accuracy against the original data, overall and per cluster, for the
    curated data and for a random removal of the same size (dots with 95% intervals)."""
    data = []
    for offset, variant in ((-0.12, "curated"), (0.12, "random removal")):
        group = table[table["variant"] == variant].reset_index(drop=True)
        data.append({
            "type": "scatter", "mode": "markers", "name": variant,
            "x": [position + offset for position in range(len(group))], "y": _finite(group["delta"]),
            "marker": {"color": _VARIANT_COLOURS[variant], "size": 9,
                       "symbol": "circle" if variant == "curated" else "diamond"},
            "error_y": {"type": "data", "symmetric": False, "visible": True, "thickness": 1.5,
                        "array": _finite(group["delta_high"] - group["delta"]),
                        "arrayminus": _finite(group["delta"] - group["delta_low"])},
            "customdata": [[html.escape(str(scope)), accuracy, int(n)] for scope, accuracy, n
                           in zip(group["scope"], _finite(group["accuracy"]), group["n_eval"])],
            "hovertemplate": "%{fullData.name}, %{customdata[0]}<br>%{y:+.2%} vs original "
                             "(accuracy %{customdata[1]:.2%}, %{customdata[2]:,} rows)<extra></extra>",
        })
    scopes = table.loc[table["variant"] == "original", "scope"].tolist()
    source = info.get("source") or "the changes"
    layout = _layout(f"What-if: {source}", "", "change in held-out accuracy vs the original data",
                     legend_title="training data")
    layout["yaxis"].update(tickformat="+.1%", zeroline=True, zerolinecolor="#444444", zerolinewidth=1)
    layout["xaxis"].update(tickmode="array", tickvals=list(range(len(scopes))), tickangle=-30,
                           ticktext=[html.escape(str(s)) for s in scopes], range=[-0.6, len(scopes) - 0.4])
    return {"data": data, "layout": layout}


_FIGURES = {"pruning": pruning_figure, "easy-hard": easy_hard_figure, "what-if": what_if_figure}


def figure_spec(result: ImpactResult) -> dict:
    """The experiment's figure as a Plotly specification (``{"data": [...], "layout": {...}}``)."""
    return _FIGURES[result.experiment](result.table, result.info)


def _plotly_js() -> str | None:
    """The plotly.js bundle shipped with the Python plotly package, read as a file (the engine
    does not import plotly); None when it is not installed."""
    spec = importlib.util.find_spec("plotly")
    for folder in (spec.submodule_search_locations or []) if spec else []:
        path = Path(folder) / "package_data" / "plotly.min.js"
        if path.is_file():
            return path.read_text(encoding="utf-8")
    return None


def figure_html(spec: dict, *, title: str = "Data Cartographer") -> str:
    """A self-contained HTML page drawing ``spec`` (plotly.js inlined when available, else
    loaded from the CDN)."""
    script = _plotly_js()
    loader = f"<script>{script}</script>" if script else \
        '<script src="https://cdn.plot.ly/plotly-2.35.2.min.js"></script>'
    # "</" inside a script element would end it early: dataset text must not break out.
    payload = json.dumps(spec, allow_nan=False).replace("</", "<\\/")
    return ("<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\">"
            f"<title>{html.escape(title)}</title>{loader}</head>\n<body style=\"margin:0\">"
            "<div id=\"figure\" style=\"width:100%;height:95vh\"></div>\n"
            f"<script>var spec = {payload};\n"
            "Plotly.newPlot('figure', spec.data, spec.layout, {responsive: true});</script>\n</body></html>\n")


def report_stem(experiment: str) -> str:
    return experiment.replace("-", "_")


def write_report(result: ImpactResult, out_dir: str | Path) -> list[Path]:
    """Write ``<stem>.csv`` (the table), ``<stem>_runs.csv``, ``<stem>.json`` (info and table),
    ``<stem>.html`` (the figure) and, for easy-to-hard, ``<stem>_buckets.csv``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    stem = report_stem(result.experiment)
    written = {
        f"{stem}.csv": result.table.to_csv(index=False),
        f"{stem}_runs.csv": result.runs.to_csv(index=False),
        f"{stem}.json": json.dumps({"info": result.info, "table": json.loads(result.table.to_json(orient="records"))},
                                   indent=1, default=str),
        f"{stem}.html": figure_html(figure_spec(result), title=f"Data Cartographer · {result.experiment}"),
    }
    if result.buckets is not None:
        written[f"{stem}_buckets.csv"] = result.buckets.to_csv(index=False)
    for name, text in written.items():
        atomic_write_text(out / name, text)
    return [out / name for name in written]
