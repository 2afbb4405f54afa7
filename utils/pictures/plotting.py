"""Pictures that work offline and still show where JavaScript does not run.

* ``attention_heads(pattern, tokens)``: circuitsvis attention patterns. The circuitsvis
  JavaScript is sent once per kernel session (gzipped, with the first picture) instead of
  once per picture, never fetched from a CDN, and no internet probe is made. Each picture
  carries a small static PNG that the interactive view replaces when JavaScript runs.
* ``heatmap(...)``, ``line(...)``: plotly figures with labelled axes. They display as
  interactive plotly where the front end supports it and as a PNG everywhere else
  (GitHub, nbconvert, a terminal's HTML export).
* ``with_fallback(widget, picture)``: an ipywidgets explorer that shows ``picture`` (its
  initial state) where widgets cannot render.
"""

from __future__ import annotations

import base64
import gzip
import io
import json
import os
import sys
import uuid
from collections.abc import Mapping, Sequence
from functools import lru_cache
from html import escape as html_escape
from pathlib import Path

import numpy as np
import torch

_SESSION = uuid.uuid4().hex[:8]
_state = {"bundle_sent": False, "count": 0, "colab": False}


def _new_id(kind: str) -> str:
    _state["count"] += 1
    return f"{kind}-{_SESSION}-{_state['count']}"


def configure(colab: bool = False) -> None:
    """On Colab, plotly figures also carry HTML (Colab does not render plotly's own mimetype)."""
    _state["colab"] = colab


def reset_session() -> None:
    """Send the circuitsvis bundle again with the next picture (a fresh page or notebook)."""
    _state["bundle_sent"] = False


# ---------------------------------------------------------------------------------------
# Static images (matplotlib, no display needed)


FIGURE_DPI_ENV = "COURSE_FIGURE_DPI"  # the static pictures' resolution: 72 in the notebooks, 200 for projecting
FIGURE_DPI = 72


def figure_dpi() -> int:
    """The resolution static pictures are drawn at: ``COURSE_FIGURE_DPI`` when set (``make figures`` sets 200
    for the copies to project), else 72, which keeps the notebooks small."""
    value = os.environ.get(FIGURE_DPI_ENV, "").strip()
    if not value:
        return FIGURE_DPI
    if not value.isdigit() or not 50 <= int(value) <= 600:
        raise ValueError(f"{FIGURE_DPI_ENV}={value!r} is not a resolution: give dots per inch, 50 to 600 (say 200)")
    return int(value)


def _png(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=figure_dpi(), bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode()


def _to_numpy(x) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().float().cpu().numpy()
    return np.asarray(x, dtype=float)


def _mpl():
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def static_heads(pattern: np.ndarray, tokens: Sequence[str], names: Sequence[str]) -> str:
    """PNG (base64) of a grid of attention patterns [head, query, key]."""
    plt = _mpl()
    n = pattern.shape[0]
    cols = min(n, 4)
    rows = (n + cols - 1) // cols
    side = 2.4 if len(tokens) <= 24 else 3.2
    fig, axes = plt.subplots(rows, cols, figsize=(side * cols, side * rows), squeeze=False)
    for h in range(rows * cols):
        ax = axes[h // cols][h % cols]
        ax.axis("off")
        if h < n:
            ax.imshow(pattern[h], cmap="Blues", vmin=0, vmax=1)
            ax.set_title(names[h], fontsize=9)
    fig.suptitle("attention patterns (query ↓, key →); static preview", fontsize=9)
    return _png(fig)


# ---------------------------------------------------------------------------------------
# circuitsvis, offline


@lru_cache(maxsize=1)
def _bundle_b64() -> str:
    import circuitsvis

    src = (Path(circuitsvis.__file__).parent / "dist" / "cdn" / "iife.js").read_bytes()
    return base64.b64encode(gzip.compress(src, 9, mtime=0)).decode()


def _bundle_script() -> str:
    # Decompress in the browser and evaluate in global scope (defines window.CircuitsVis).
    return (
        "<script>(function(){if(window.CircuitsVis||window.__courseCV)return;"
        f"var b=atob('{_bundle_b64()}');var u=new Uint8Array(b.length);"
        "for(var i=0;i<b.length;i++)u[i]=b.charCodeAt(i);"
        "window.__courseCV=new Response(new Blob([u]).stream().pipeThrough("
        "new DecompressionStream('gzip'))).text().then(function(s){"
        "var e=document.createElement('script');e.text=s;document.head.appendChild(e);});"
        "})();</script>"
    )


def script_json(text: str) -> str:
    """JSON made safe to place inside an HTML ``<script>``: ``<``, ``>`` and ``&`` become JSON
    escapes (the same string to JavaScript), so a token such as ``</script>`` cannot end it."""
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


class CircuitsVisPicture:
    """An interactive circuitsvis component with an embedded static preview."""

    def __init__(self, component: str, props: dict, fallback_png: str, height: int = 420):
        self.component, self.props, self.fallback_png, self.height = component, props, fallback_png, height

    def _repr_html_(self) -> str:
        from circuitsvis.utils.convert_props import convert_props

        div = _new_id("course-cv")
        prelude = ""
        # Colab shows each output in a sandboxed frame of its own: a script sent with an earlier picture is not
        # there for a later one, so on Colab every picture carries the bundle (about half a megabyte).
        if not _state["bundle_sent"] or _state["colab"]:
            prelude = _bundle_script()
            _state["bundle_sent"] = True
        img = f'<img alt="attention patterns (static preview)" src="data:image/png;base64,{self.fallback_png}"/>'
        script = (
            "<script>(function(){var el=document.getElementById('" + div + "');"
            "function go(){el.innerHTML='';CircuitsVis.render('"
            + div
            + "',CircuitsVis."
            + self.component
            + ","
            + script_json(convert_props(self.props))
            + ");}"
            "if(window.CircuitsVis)go();else if(window.__courseCV)window.__courseCV.then(go);"
            "})();</script>"
        )
        return f'{prelude}<div id="{div}" class="course-cv" style="margin:10px 0;min-height:40px">{img}</div>{script}'

    def _repr_png_(self) -> bytes:
        return base64.b64decode(self.fallback_png)


def attention_heads(
    pattern, tokens: Sequence[str], head_names: Sequence[str] | None = None, max_tokens: int = 80
) -> CircuitsVisPicture:
    """Attention patterns ``[head, query, key]`` (or ``[query, key]``) over ``tokens``.

    Display the result (make it the last line of a cell). Long sequences are cut to the
    first ``max_tokens`` tokens so that pictures stay small.
    """
    p = _to_numpy(pattern)
    if p.ndim == 2:
        p = p[None]
    if p.ndim != 3 or p.shape[1] != p.shape[2]:
        raise ValueError(f"pattern should be [head, query, key] with query == key, got {p.shape}")
    if p.shape[1] != len(tokens):
        raise ValueError(f"pattern covers {p.shape[1]} positions but {len(tokens)} tokens were given")
    n = min(max_tokens, len(tokens))
    p, tokens = p[:, :n, :n], list(tokens)[:n]
    names = list(head_names) if head_names else [f"head {h}" for h in range(p.shape[0])]
    props = {"attention": np.round(p, 3).tolist(), "tokens": tokens, "attentionHeadNames": names}
    return CircuitsVisPicture("AttentionHeads", props, static_heads(p, tokens, names))


# ---------------------------------------------------------------------------------------
# plotly with a static fallback


class Figure:
    """A plotly figure that also carries a PNG for front ends without JavaScript."""

    def __init__(self, fig, fallback_png: str):
        self.fig, self.fallback_png = fig, fallback_png

    def _repr_mimebundle_(self, include=None, exclude=None):
        # The static picture goes in text/html, not image/png: jupyterlab-plotly shows a
        # bundle's PNG instead of drawing the plot whenever one is present. Front ends with
        # a plotly renderer (JupyterLab, VS Code) draw it; the others (GitHub, nbconvert)
        # show the <img>.
        html = (
            self.fig.to_html(include_plotlyjs="cdn", full_html=False)
            if _state["colab"]
            else f'<img alt="{html_escape(self.title)}" src="data:image/png;base64,{self.fallback_png}"/>'
        )
        return {
            "application/vnd.plotly.v1+json": json.loads(self.fig.to_json()),
            "text/html": html,
            "text/plain": f"<Figure: {self.title}>",
        }

    @property
    def title(self) -> str:
        return self.fig.layout.title.text or "untitled figure"

    def show(self):
        from IPython.display import display

        display(self)


def heatmap(
    z,
    x: Sequence | None = None,
    y: Sequence | None = None,
    *,
    title: str,
    xlabel: str,
    ylabel: str,
    zlabel: str = "",
    zmid: float | None = None,
    colorscale: str | None = None,
    text_auto: bool | str = False,
    text: Sequence[Sequence[str]] | None = None,
    zrange: tuple[float, float] | None = None,
) -> Figure:
    """A labelled heatmap of a 2-D array (rows = y, columns = x).

    Values that all lie in [0, 1] (scores, shares, attention) are drawn on the fixed range 0 to 1, so that a
    0.03 is pale whatever the largest value is; ``zrange=(low, high)`` sets another range, and a diverging map
    (``zmid``) is symmetric about its middle.

    ``text`` (rows × columns of strings, e.g. the top token of each cell) is written in the
    cells instead of the values that ``text_auto`` writes.
    """
    import plotly.graph_objects as go

    z = _to_numpy(z)
    if z.ndim != 2:
        raise ValueError(f"heatmap needs a 2-D array, got shape {z.shape}")
    x = list(x) if x is not None else list(range(z.shape[1]))
    y = list(y) if y is not None else list(range(z.shape[0]))
    diverging = zmid is not None
    if zrange is None and not diverging and z.size and np.nanmin(z) >= 0 and np.nanmax(z) <= 1:
        zrange = (0.0, 1.0)
    scale = colorscale or ("RdBu" if diverging else "Blues")
    fig = go.Figure(
        go.Heatmap(
            z=z,
            x=[str(v) for v in x],
            y=[str(v) for v in y],
            zmid=zmid,
            zmin=None if zrange is None else zrange[0],
            zmax=None if zrange is None else zrange[1],
            colorscale=scale,
            reversescale=diverging and colorscale is None,
            colorbar={"title": {"text": zlabel}},
            text=[list(map(str, row)) for row in text] if text is not None else None,
            texttemplate="%{text}" if text is not None else "%{z:.2f}" if text_auto else None,
        )
    )
    fig.update_layout(
        title=title,
        xaxis_title=xlabel,
        yaxis_title=ylabel,
        width=620,
        height=460,
        yaxis_autorange="reversed",
        template="plotly_white",
    )
    plt = _mpl()
    mfig, ax = plt.subplots(figsize=(6.2, 4.6))
    lim = np.nanmax(np.abs(z)) if diverging else None  # a blank (NaN) cell does not set the range
    im = ax.imshow(
        z,
        cmap="RdBu_r" if diverging else "Blues",
        aspect="auto",
        vmin=(zmid - lim) if diverging else None if zrange is None else zrange[0],
        vmax=(zmid + lim) if diverging else None if zrange is None else zrange[1],
    )
    ax.set_xticks(range(len(x)), [str(v) for v in x], rotation=90 if len(x) > 12 else 0, fontsize=7)
    ax.set_yticks(range(len(y)), [str(v) for v in y], fontsize=7)
    if text is not None:
        dark = im.norm(z) > 0.6  # light text on dark cells
        for (i, j), _ in np.ndenumerate(z):
            ax.text(
                j, i, str(text[i][j]), ha="center", va="center", fontsize=6, color="white" if dark[i, j] else "black"
            )
    elif text_auto and z.size <= 400:
        for (i, j), v in np.ndenumerate(z):
            ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=6)
    mfig.colorbar(im, ax=ax, label=zlabel)
    ax.set(title=title, xlabel=xlabel, ylabel=ylabel)
    return Figure(fig, _png(mfig))


def line(
    ys: Mapping[str, Sequence[float]] | Sequence[float],
    x: Sequence | None = None,
    *,
    title: str,
    xlabel: str,
    ylabel: str,
    markers: bool = False,
) -> Figure:
    """One or several labelled lines: ``ys`` is a sequence or ``{label: sequence}``."""
    import plotly.graph_objects as go

    series = dict(ys) if isinstance(ys, Mapping) else {ylabel: ys}
    fig = go.Figure()
    plt = _mpl()
    mfig, ax = plt.subplots(figsize=(6.2, 3.8))
    for label, values in series.items():
        v = _to_numpy(values)
        xs = list(x) if x is not None else list(range(len(v)))
        fig.add_trace(go.Scatter(x=xs, y=v, name=label, mode="lines+markers" if markers else "lines"))
        ax.plot(xs, v, marker="o" if markers else None, label=label, markersize=3)
    fig.update_layout(
        title=title,
        xaxis_title=xlabel,
        yaxis_title=ylabel,
        width=620,
        height=380,
        template="plotly_white",
        showlegend=len(series) > 1,
    )
    ax.set(title=title, xlabel=xlabel, ylabel=ylabel)
    if len(series) > 1:
        ax.legend(fontsize=7)
    return Figure(fig, _png(mfig))


def curves(
    series: Mapping[str, tuple[Sequence[float], Sequence[float]]],
    *,
    title: str,
    xlabel: str,
    ylabel: str,
    labels: Mapping[str, Sequence[str]] | None = None,
) -> Figure:
    """Lines that each have their own x values: ``series`` is ``{label: (xs, ys)}`` (for
    trade-offs: one line per setting, one point per strength). ``labels`` names each point
    (hover text; written beside the points in the static picture)."""
    import plotly.graph_objects as go

    fig = go.Figure()
    plt = _mpl()
    mfig, ax = plt.subplots(figsize=(6.2, 3.8))
    for name, (xs, ys) in series.items():
        xs, ys = _to_numpy(xs), _to_numpy(ys)
        text = list(labels[name]) if labels and name in labels else None
        fig.add_trace(go.Scatter(x=xs, y=ys, name=name, mode="lines+markers", text=text))
        ax.plot(xs, ys, marker="o", markersize=3, label=name)
        for a, b, t in zip(xs, ys, text or []):
            ax.annotate(str(t), (a, b), textcoords="offset points", xytext=(3, 3), fontsize=6)
    fig.update_layout(
        title=title, xaxis_title=xlabel, yaxis_title=ylabel, width=620, height=400, template="plotly_white"
    )
    ax.set(title=title, xlabel=xlabel, ylabel=ylabel)
    ax.legend(fontsize=7)
    return Figure(fig, _png(mfig))


def flow(stages: Sequence[tuple[str, str]], *, title: str) -> Figure:
    """A mechanism as a chain of boxes left to right, each ``(name, what was measured)``, with
    arrows between them (the order information flows in)."""
    import plotly.graph_objects as go

    n = len(stages)
    fig = go.Figure()
    plt = _mpl()
    mfig, ax = plt.subplots(figsize=(2.3 * n, 2.6))
    for k, (name, detail) in enumerate(stages):
        x0, x1 = k * 1.3, k * 1.3 + 1.0
        fig.add_shape(type="rect", x0=x0, x1=x1, y0=0.35, y1=1.0, line=dict(color="#4c72b0"), fillcolor="#eaf0fb")
        fig.add_annotation(x=(x0 + x1) / 2, y=0.85, text=f"<b>{name}</b>", showarrow=False, font=dict(size=12))
        fig.add_annotation(
            x=(x0 + x1) / 2, y=0.55, text=detail.replace("\n", "<br>"), showarrow=False, font=dict(size=10)
        )
        ax.add_patch(plt.Rectangle((x0, 0.35), 1.0, 0.65, facecolor="#eaf0fb", edgecolor="#4c72b0"))
        ax.text((x0 + x1) / 2, 0.85, name, ha="center", va="center", fontsize=8, weight="bold")
        ax.text((x0 + x1) / 2, 0.55, detail, ha="center", va="center", fontsize=6.5)
        if k:
            fig.add_annotation(
                x=x0, y=0.68, ax=x0 - 0.3, ay=0.68, xref="x", yref="y", axref="x", ayref="y", showarrow=True,
                arrowhead=2, text="",
            )  # fmt: skip
            ax.annotate("", (x0, 0.68), (x0 - 0.3, 0.68), arrowprops=dict(arrowstyle="->"))
    fig.update_layout(
        title=title,
        width=max(620, 190 * n),
        height=300,
        template="plotly_white",
        xaxis=dict(visible=False, range=[-0.1, n * 1.3 - 0.2]),
        yaxis=dict(visible=False, range=[0.2, 1.1]),
    )
    ax.set(xlim=(-0.1, n * 1.3 - 0.2), ylim=(0.2, 1.1), title=title)
    ax.axis("off")
    return Figure(fig, _png(mfig))


def scatter(
    x: Sequence[float],
    y: Sequence[float],
    labels: Sequence[str],
    *,
    title: str,
    xlabel: str,
    ylabel: str,
    color: Sequence[float] | None = None,
    colorlabel: str = "",
) -> Figure:
    """Labelled points (e.g. class means on two principal axes), equal axes, optional colour scale."""
    import plotly.graph_objects as go

    xs, ys = _to_numpy(x), _to_numpy(y)
    c = _to_numpy(color) if color is not None else None
    marker = {"size": 10}
    if c is not None:
        marker.update(color=c, colorscale="HSV", showscale=True, colorbar={"title": {"text": colorlabel}})
    fig = go.Figure(
        go.Scatter(x=xs, y=ys, mode="markers+text", text=list(labels), textposition="top center", marker=marker)
    )
    fig.update_layout(
        title=title, xaxis_title=xlabel, yaxis_title=ylabel, width=560, height=520, template="plotly_white"
    )
    fig.update_yaxes(scaleanchor="x", scaleratio=1)
    plt = _mpl()
    mfig, ax = plt.subplots(figsize=(5.6, 5.2))
    sc = ax.scatter(xs, ys, c=c, cmap="hsv" if c is not None else None)
    for a, b, text in zip(xs, ys, labels):
        ax.annotate(str(text), (a, b), textcoords="offset points", xytext=(0, 6), ha="center", fontsize=7)
    if c is not None:
        mfig.colorbar(sc, ax=ax, label=colorlabel)
    ax.set_aspect("equal", adjustable="datalim")
    ax.set(title=title, xlabel=xlabel, ylabel=ylabel)
    return Figure(fig, _png(mfig))


# ---------------------------------------------------------------------------------------
# Widgets with a static fallback


class WidgetWithFallback:
    """Display an ipywidgets explorer; where widgets cannot render, show a static picture (a PNG)
    or static HTML (``fallback_html``, e.g. a few dashboards)."""

    def __init__(self, widget, fallback_png: str | None, caption: str, fallback_html: str | None = None):
        self.widget, self.fallback_png, self.caption = widget, fallback_png, caption
        self.fallback_html = fallback_html

    def _repr_mimebundle_(self, include=None, exclude=None):
        bundle = self.widget._repr_mimebundle_(include=include, exclude=exclude) or {}
        bundle = dict(bundle)
        if self.fallback_html is not None:
            bundle["text/html"] = (
                f'<div aria-label="{html_escape(self.caption)} (static preview)">{self.fallback_html}</div>'
            )
        else:
            bundle["text/html"] = (
                f'<img alt="{html_escape(self.caption)} (static preview)" '
                f'src="data:image/png;base64,{self.fallback_png}"/>'
            )
        bundle["text/plain"] = f"[interactive explorer: {self.caption}; a live kernel shows the widget]"
        metadata = colab_widget_metadata()
        return (bundle, metadata) if metadata else bundle


WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"


def colab_widget_metadata() -> dict:
    """What Colab needs beside a widget's view to draw it: the address of its custom widget manager.

    Colab attaches it itself only to outputs sent with ``display(...)``, not to a cell's last value; an explorer is
    a cell's last value, so it carries the metadata itself. Empty off Colab, and on a Colab whose widget manager
    has not been turned on (the setup cell turns it on)."""
    if not _state["colab"]:
        return {}
    widgets = getattr(sys.modules.get("google.colab.output"), "_widgets", None)
    url = getattr(widgets, "_installed_url", None)
    return {WIDGET_VIEW: {"colab": {"custom_widget_manager": {"url": url}}}} if url else {}


def with_fallback(widget, picture, caption: str = "explorer") -> WidgetWithFallback:
    """Wrap ``widget`` so its static stand-in is ``picture``: a Figure or attention picture, or
    anything with ``_repr_html_`` (a dashboard, a list of them joined by ``html_of``)."""
    if hasattr(picture, "_repr_html_") and not hasattr(picture, "fallback_png"):
        return WidgetWithFallback(widget, None, caption, fallback_html=picture._repr_html_())
    png = picture.fallback_png if hasattr(picture, "fallback_png") else picture
    return WidgetWithFallback(widget, png, caption)


# ---------------------------------------------------------------------------------------
# Toy models: feature directions in a plane


def directions_2d(
    panels: Mapping[str, np.ndarray | torch.Tensor],
    *,
    title: str,
    labels: Sequence[str] | None = None,
    colour: Sequence[float] | None = None,
    colourlabel: str = "",
) -> Figure:
    """Small multiples, one per ``{panel title: W}`` with ``W`` ``[2, n]``: each feature's direction drawn as a
    line from the origin to its point (an arrow's shaft), all panels on the same square scale. ``colour`` gives
    each feature a value (its importance) that shades it, darkest first; where every value is the same (equal
    importances) each feature gets a colour of its own instead. ``labels`` names the points, in the legend and
    beside each point of the static picture (which has no legend)."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    mats = {name: _to_numpy(w) for name, w in panels.items()}
    n = next(iter(mats.values())).shape[1]
    labels = list(labels) if labels is not None else [str(i) for i in range(n)]
    shade = _to_numpy(colour) if colour is not None else np.linspace(1, 0.3, n)
    lo, hi = float(shade.min()), float(shade.max())
    level = (shade - lo) / (hi - lo) if hi > lo else np.ones(n)
    lim = 1.15 * max(float(np.abs(w).max()) for w in mats.values()) or 1.0
    cols = len(mats)
    fig = make_subplots(rows=1, cols=cols, subplot_titles=list(mats))
    plt = _mpl()
    mfig, axes = plt.subplots(1, cols, figsize=(2.2 * cols, 2.6), squeeze=False)
    cmap = plt.get_cmap("viridis_r")
    distinct = plt.get_cmap("tab10")  # equal values: shading would draw every feature alike
    for c, (name, w) in enumerate(mats.items()):
        ax = axes[0][c]
        for i in range(n):
            rgb = cmap(0.15 + 0.8 * level[i]) if hi > lo else distinct(i % 10)  # viridis_r: the largest darkest
            css = f"rgb({int(255 * rgb[0])},{int(255 * rgb[1])},{int(255 * rgb[2])})"
            fig.add_trace(
                go.Scatter(
                    x=[0, w[0, i]],
                    y=[0, w[1, i]],
                    mode="lines+markers",
                    marker={"size": [0, 8], "color": css},
                    line={"color": css, "width": 3},
                    name=labels[i],
                    legendgroup=labels[i],
                    showlegend=c == 0,
                    hovertext=f"{labels[i]}: length {np.hypot(w[0, i], w[1, i]):.2f}",
                ),
                row=1,
                col=c + 1,
            )
            ax.plot([0, w[0, i]], [0, w[1, i]], color=rgb, linewidth=2)
            ax.plot([w[0, i]], [w[1, i]], "o", color=rgb, markersize=4)
            if np.hypot(w[0, i], w[1, i]) > 0.05 * lim:  # a dropped feature's point sits on the origin: no label
                ax.annotate(labels[i], (w[0, i], w[1, i]), xytext=(3, 3), textcoords="offset points", fontsize=7)
        ax.set_xlim(-lim, lim)
        ax.set_ylim(-lim, lim)
        ax.set_aspect("equal")
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_title(name, fontsize=8)
        fig.update_xaxes(range=[-lim, lim], showticklabels=False, row=1, col=c + 1)
        fig.update_yaxes(
            range=[-lim, lim], showticklabels=False, scaleanchor=f"x{c + 1 if c else ''}", row=1, col=c + 1
        )
    fig.update_layout(
        title=title, width=max(620, 190 * cols), height=330, template="plotly_white", legend_title=colourlabel
    )
    mfig.suptitle(title, fontsize=9)
    return Figure(fig, _png(mfig))


def dots_and_line(
    dots: tuple[Sequence[float], Sequence[float]],
    line_xy: tuple[Sequence[float], Sequence[float]],
    *,
    title: str,
    xlabel: str,
    ylabel: str,
    dots_label: str,
    line_label: str,
    logx: bool = False,
    guides: Mapping[str, float] | None = None,
) -> Figure:
    """Many small points (e.g. one per feature per setting) with one line over them (their summary), and
    optional horizontal guides ``{label: y}`` (e.g. the fractions a measure sticks at)."""
    import plotly.graph_objects as go

    dx, dy = _to_numpy(dots[0]), _to_numpy(dots[1])
    lx, ly = _to_numpy(line_xy[0]), _to_numpy(line_xy[1])
    fig = go.Figure()
    fig.add_trace(go.Scatter(x=dx, y=dy, mode="markers", name=dots_label, marker={"size": 5, "opacity": 0.45}))
    fig.add_trace(go.Scatter(x=lx, y=ly, mode="lines+markers", name=line_label, line={"width": 3}))
    plt = _mpl()
    mfig, ax = plt.subplots(figsize=(6.2, 3.8))
    ax.scatter(dx, dy, s=8, alpha=0.45, label=dots_label)
    ax.plot(lx, ly, marker="o", markersize=3, linewidth=2, color="black", label=line_label)
    for text, y in (guides or {}).items():
        fig.add_hline(y=y, line_dash="dot", line_color="grey", annotation_text=text, annotation_position="right")
        ax.axhline(y, linestyle=":", color="grey", linewidth=0.8)
        ax.annotate(text, (1.0, y), xycoords=("axes fraction", "data"), fontsize=6, va="center")
    fig.update_layout(
        title=title, xaxis_title=xlabel, yaxis_title=ylabel, width=620, height=400, template="plotly_white"
    )
    if logx:
        fig.update_xaxes(type="log")
        ax.set_xscale("log")
    ax.set(title=title, xlabel=xlabel, ylabel=ylabel)
    ax.legend(fontsize=7)
    return Figure(fig, _png(mfig))


# ---------------------------------------------------------------------------------------
# Attribution graphs: nodes placed by position (x) and layer (y), edges coloured by sign


def graph_picture(
    xs: Sequence[int],
    ys: Sequence[float],
    labels: Sequence[str],
    kinds: Sequence[str],
    sizes: Sequence[float],
    edges: Sequence[tuple[int, int, float]],
    *,
    tokens: Sequence[str],
    layer_names: Sequence[str],
    title: str,
    shown: Sequence[str] | None = None,
    path: Sequence[tuple[int, int]] = (),
) -> Figure:
    """A pruned attribution graph a learner can read: node ``i`` at column ``xs[i]`` (a token position) and row
    ``ys[i]`` (0 for embeddings, then one row per layer, the readout on top), labelled ``labels[i]``, shaped by
    ``kinds[i]`` ("embed", "feature", "error", "readout") and sized by ``sizes[i]`` in [0, 1] (e.g. influence);
    ``edges`` are ``(source, target, weight)``, drawn blue when the source pushes the target up and red when it
    pushes it down, wider when stronger (a legend says so). Hover a node for its label; ``shown[i]`` (if given) is
    written beside node ``i`` in both pictures, and the ``(source, target)`` pairs of ``path`` are drawn in black
    over the rest, so that one route from a token to the readout can be followed."""
    import plotly.graph_objects as go

    xs, ys, sizes = _to_numpy(xs).astype(float), _to_numpy(ys).astype(float), _to_numpy(sizes).astype(float)
    if not (len(xs) == len(ys) == len(labels) == len(kinds) == len(sizes)):
        raise ValueError("graph_picture needs one x, y, label, kind and size per node")
    # nodes sharing a cell are spread across it
    offsets = np.zeros_like(xs)
    for cell in {(a, b) for a, b in zip(xs, ys)}:
        members = [i for i in range(len(xs)) if (xs[i], ys[i]) == cell]
        for rank, i in enumerate(members):
            offsets[i] = (rank - (len(members) - 1) / 2) * min(0.8 / max(len(members), 1), 0.2)
    px = xs + offsets
    top = max((abs(w) for _, _, w in edges), default=1.0) or 1.0
    shapes = {"embed": "square", "feature": "circle", "error": "diamond", "readout": "star"}
    colours = {"embed": "#777777", "feature": "#1f5fa8", "error": "#c07a00", "readout": "#2a8a2a"}
    fig = go.Figure()
    for s, t, w in edges:
        colour = "rgba(31,95,168,0.5)" if w > 0 else "rgba(200,40,40,0.5)"
        fig.add_trace(
            go.Scatter(
                x=[px[s], px[t]],
                y=[ys[s], ys[t]],
                mode="lines",
                line={"width": 0.5 + 4 * abs(w) / top, "color": colour},
                hoverinfo="skip",
                showlegend=False,
            )
        )
    for s, t in path:
        fig.add_trace(
            go.Scatter(
                x=[px[s], px[t]],
                y=[ys[s], ys[t]],
                mode="lines",
                line={"width": 3, "color": "black"},
                hoverinfo="skip",
                showlegend=False,
            )
        )
    for name, colour in (("edge: pushes its target up", "rgb(31,95,168)"), ("edge: pushes it down", "rgb(200,40,40)")):
        fig.add_trace(go.Scatter(x=[None], y=[None], mode="lines", line={"width": 3, "color": colour}, name=name))
    for kind in shapes:
        idx = [i for i, k in enumerate(kinds) if k == kind]
        if not idx:
            continue
        fig.add_trace(
            go.Scatter(
                x=px[idx],
                y=ys[idx],
                mode="markers",
                name=kind,
                text=[labels[i] for i in idx],
                hoverinfo="text",
                marker={"symbol": shapes[kind], "size": 6 + 18 * sizes[idx], "color": colours[kind]},
            )
        )
    fig.update_layout(
        title=title,
        width=max(620, 46 * len(tokens)),
        height=520,
        template="plotly_white",
        xaxis={"tickvals": list(range(len(tokens))), "ticktext": list(tokens), "title": "position"},
        yaxis={"tickvals": list(range(len(layer_names))), "ticktext": list(layer_names), "title": ""},
    )
    plt = _mpl()
    mfig, ax = plt.subplots(figsize=(max(6.2, 0.46 * len(tokens)), 5.2))
    for s, t, w in edges:
        ax.plot(
            [px[s], px[t]],
            [ys[s], ys[t]],
            color="#1f5fa8" if w > 0 else "#c82828",
            alpha=0.45,
            linewidth=0.4 + 3 * abs(w) / top,
            zorder=1,
        )
    ax.plot([], [], color="#1f5fa8", linewidth=2, label="edge: pushes its target up")
    ax.plot([], [], color="#c82828", linewidth=2, label="edge: pushes it down")
    markers = {"embed": "s", "feature": "o", "error": "D", "readout": "*"}
    for kind, marker in markers.items():
        idx = [i for i, k in enumerate(kinds) if k == kind]
        if idx:
            ax.scatter(
                px[idx], ys[idx], s=12 + 140 * sizes[idx], marker=marker, color=colours[kind], label=kind, zorder=2
            )
    for s, t in path:
        ax.plot([px[s], px[t]], [ys[s], ys[t]], color="black", linewidth=2.2, zorder=3)
    stacked: dict[tuple[float, float], int] = {}  # labels in one cell are stacked above each other
    for i, text in enumerate(shown or []):
        if text:
            rank = stacked[(xs[i], ys[i])] = stacked.get((xs[i], ys[i]), -1) + 1
            ax.annotate(
                text,
                (px[i], ys[i]),
                xytext=(6, 5 + 9 * rank),
                textcoords="offset points",
                fontsize=6.5,
                zorder=4,
                arrowprops={"arrowstyle": "-", "linewidth": 0.3, "color": "#555555"} if rank else None,
            )
            fig.add_annotation(
                x=px[i],
                y=ys[i],
                text=text,
                showarrow=bool(rank),
                ax=20,
                ay=-12 - 13 * rank,
                font={"size": 9},
                xshift=0 if rank else 4,
                yshift=0 if rank else 10,
                arrowwidth=0.5,
            )
    ax.set_xticks(range(len(tokens)), list(tokens), rotation=60, fontsize=7)
    ax.set_yticks(range(len(layer_names)), list(layer_names), fontsize=8)
    ax.legend(fontsize=7, loc="upper left", title="edge width: its size", title_fontsize=7)
    ax.set(title=title, xlabel="position")
    return Figure(fig, _png(mfig))
