"""Feature dashboards for SAE latents: plain HTML with inline styles, no JavaScript, so that they
render offline, in a committed notebook, on GitHub and in the browser test alike.

A dashboard shows one latent: its strongest contexts with each token shaded by the latent's
activation, the tokens its decoder direction promotes and suppresses through the unembedding,
and a histogram of its non-zero activations.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from html import escape

import torch

ORANGE = (230, 120, 20)


@dataclass
class Dashboard:
    """One latent's dashboard; Jupyter shows its HTML."""

    html: str

    def _repr_html_(self) -> str:
        return self.html


def _token_html(text: str, value: float, top: float, mark: bool) -> str:
    alpha = 0.0 if top <= 0 else max(0.0, min(1.0, value / top))
    shown = escape(text).replace(" ", "&nbsp;") or "&#8203;"
    border = "border-bottom:2px solid #333;" if mark else ""
    title = f' title="{value:.2f}"' if value > 0 else ""
    return (
        f'<span style="background:rgba({ORANGE[0]},{ORANGE[1]},{ORANGE[2]},{alpha:.2f});{border}'
        f'font-family:monospace"{title}>{shown}</span>'
    )


def context_html(
    tokens: Sequence[str], values: torch.Tensor, at: int, top: float, before: int = 12, after: int = 4
) -> str:
    """One context: ``tokens`` of a document with their activations ``values``, cut around
    position ``at`` (underlined), each token shaded by its activation over ``top``."""
    lo, hi = max(0, at - before), min(len(tokens), at + after + 1)
    parts = [_token_html(tokens[i], float(values[i]), top, i == at) for i in range(lo, hi)]
    return ("…" if lo > 0 else "") + "".join(parts) + ("…" if hi < len(tokens) else "")


def histogram_svg(values: torch.Tensor, bins: int = 24, width: int = 220, height: int = 90) -> str:
    """An inline SVG histogram of ``values`` (the latent's non-zero activations)."""
    if len(values) == 0:
        return "<em>never active on these tokens</em>"
    counts = torch.histc(values.float(), bins=bins, min=0.0, max=float(values.max()))
    bar = width / bins
    rects = "".join(
        f'<rect x="{i * bar:.1f}" y="{height - 14 - h:.1f}" width="{bar - 1:.1f}" height="{h:.1f}" fill="rgb{ORANGE}"/>'
        for i, h in enumerate((counts / counts.max() * (height - 18)).tolist())
    )
    axis = (
        f'<text x="0" y="{height - 2}" font-size="10">0</text>'
        f'<text x="{width}" y="{height - 2}" font-size="10" text-anchor="end">{float(values.max()):.1f}</text>'
    )
    return f'<svg width="{width}" height="{height}" role="img" aria-label="activation histogram">{rects}{axis}</svg>'


def latent_dashboard(
    latent: int,
    activations: torch.Tensor,
    contexts: Sequence[tuple[Sequence[str], torch.Tensor, int]],
    promoted: Sequence[tuple[str, float]],
    suppressed: Sequence[tuple[str, float]],
    title: str = "",
) -> Dashboard:
    """A dashboard for ``latent``: ``activations [row]`` on every token of the sample (for the
    firing rate and the histogram); ``contexts``: ``(tokens, values, position)`` of each top
    document, strongest first; ``promoted`` / ``suppressed``: ``(token, logit effect)`` pairs."""
    active = activations[activations > 0]
    top = float(active.max()) if len(active) else 0.0
    rows = "".join(
        f'<div style="margin:2px 0;white-space:nowrap;overflow:hidden">'
        f'<span style="color:#888;font-size:11px">{float(v[at]):5.2f}&nbsp;</span>{context_html(t, v, at, top)}</div>'
        for t, v, at in contexts
    )

    def column(pairs: Sequence[tuple[str, float]], colour: str) -> str:
        return "".join(
            f'<div style="font-family:monospace;white-space:nowrap">'
            f'<span style="color:{colour}">{value:+.2f}</span>&nbsp;{escape(tok).replace(" ", "&nbsp;")}</div>'
            for tok, value in pairs
        )

    head = (
        f"<b>latent {latent}</b>{(' · ' + escape(title)) if title else ''} · active on "
        f"{len(active) / max(1, len(activations)):.2%} of {len(activations):,} tokens · max {top:.2f}"
    )
    html = (
        '<div style="border:1px solid #ddd;border-radius:6px;padding:8px;margin:6px 0;font-size:12px">'
        f'<div style="margin-bottom:6px">{head}</div>'
        '<div style="display:flex;gap:18px;align-items:flex-start">'
        '<div style="flex:1;min-width:0"><div style="color:#666">strongest contexts (one per document)</div>'
        f"{rows}</div>"
        f'<div><div style="color:#666">promotes</div>{column(promoted, "#1a7f37")}</div>'
        f'<div><div style="color:#666">suppresses</div>{column(suppressed, "#b42318")}</div>'
        f'<div><div style="color:#666">non-zero activations</div>{histogram_svg(active)}</div>'
        "</div></div>"
    )
    return Dashboard(html)
