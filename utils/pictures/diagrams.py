"""Mechanism diagrams for the lessons, drawn in code: one function per diagram.

Each function draws how one lesson's mechanism or method works, with the names the lesson uses
(its exercise functions, hooks and variables) and no measured numbers (those live in the lessons
and move when a model is retrained), and saves it as ``<out>/diagram-<its name>.svg``. The first
line of its docstring is its title. The SVGs are deterministic (fixed ids, text kept as text, no
date), so a test can draw them again and compare bytes. ``python -m utils.course.figures`` writes them
into ``docs/figures/NN/`` (``LESSONS`` says which lesson shows which).

    from utils.pictures import diagrams
    diagrams.sae_forward_pass(Path("out"))      # writes out/diagram-sae-forward-pass.svg

Coordinates are inches from the bottom left of the picture.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import matplotlib
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.patches import Circle, FancyArrowPatch, FancyBboxPatch

INK, GREY, STREAM = "#222222", "#666666", "#c8c8c8"
# (fill, edge) of each kind of box
STYLE = {
    "plain": ("#f4f4f4", "#888888"),
    "clean": ("#eaf2fb", "#4a6fa5"),
    "corrupt": ("#fdecea", "#c0392b"),
    "act": ("#fff4e0", "#d98c1f"),  # what the method does: a copy, a vector added, a map
    "read": ("#e8f5e9", "#2e7d32"),  # where the result is read
    "ghost": ("#ffffff", "#bbbbbb"),  # a control, or a latent that is exactly 0
}
SVG_RC = {"svg.hashsalt": "course", "svg.fonttype": "none", "svg.id": None}

# ---------------------------------------------------------------------------------------
# drawing helpers


def _canvas(width: float, height: float, heading: str) -> tuple[Figure, Axes]:
    """An empty picture ``width`` × ``height`` inches with ``heading`` at its top left."""
    fig = Figure(figsize=(width, height))
    ax = fig.add_axes((0, 0, 1, 1))
    ax.set(xlim=(0, width), ylim=(0, height))
    ax.axis("off")
    ax.text(0.25, height - 0.25, heading, fontsize=15, weight="bold", color=INK, va="top")
    return fig, ax


def _fill(kind: str) -> dict:
    """The face and edge colours of a kind of box, as patch keywords."""
    fill, edge = STYLE[kind]
    return {"facecolor": fill, "edgecolor": edge, "linewidth": 1.4}


def _box(
    ax: Axes, x: float, y: float, w: float, h: float, text: str = "", kind: str = "plain", size: float = 10, **text_kw
) -> None:
    """A rounded box with its lower left corner at (x, y) and ``text`` in its middle; ``kind="ghost"``
    draws it dashed."""
    style = "round,pad=0,rounding_size=0.07"
    linestyle = "--" if kind == "ghost" else "-"
    ax.add_patch(FancyBboxPatch((x, y), w, h, boxstyle=style, linestyle=linestyle, **_fill(kind)))
    ax.text(x + w / 2, y + h / 2, text, ha="center", va="center", color=INK, fontsize=size, **text_kw)


def _arrow(
    ax: Axes,
    start: tuple[float, float],
    end: tuple[float, float],
    label: str = "",
    color: str = INK,
    rad: float = 0.0,
    both: bool = False,
    dashed: bool = False,
    rise: float = 0.12,
) -> None:
    """An arrow from ``start`` to ``end``, bent by ``rad`` (0: straight), with ``label`` written
    ``rise`` inches above the middle of the straight line between its ends."""
    ax.add_patch(
        FancyArrowPatch(
            start,
            end,
            arrowstyle="<|-|>" if both else "-|>",
            mutation_scale=14,
            color=color,
            linewidth=1.4,
            linestyle="--" if dashed else "-",
            connectionstyle=f"arc3,rad={rad}",
            shrinkA=2,
            shrinkB=2,
        )
    )
    if label:
        middle = ((start[0] + end[0]) / 2, (start[1] + end[1]) / 2 + rise)
        ax.text(*middle, label, ha="center", va="bottom", fontsize=8.5, color=color)


def _note(ax: Axes, x: float, y: float, text: str, **text_kw) -> None:
    """Grey explanatory text whose top left corner is at (x, y)."""
    ax.text(x, y, text, **{"fontsize": 9, "color": GREY, "va": "top", "ha": "left", **text_kw})


def _width(word: str, size: float = 11) -> float:
    """The width of a token box that holds ``word`` in monospace at font ``size``."""
    return 0.16 + 0.085 * len(word) * size / 11


def _tokens(
    ax: Axes, x: float, y: float, words: list[str], kinds: list[str], widths: list[float] | None = None
) -> list[float]:
    """A row of token boxes from (x, y) rightwards (``widths``: each box's, to line rows up);
    returns the boxes' centres."""
    centres = []
    for word, kind, w in zip(words, kinds, widths or [_width(word) for word in words]):
        _box(ax, x, y, w, 0.36, word, kind, size=11, family="monospace")
        centres.append(x + w / 2)
        x += w + 0.06
    return centres


def _cells(ax: Axes, x: float, y: float, kinds: list[str], size: float) -> None:
    """A vector as a column of small squares from (x, y) upwards, one kind per entry."""
    for i, kind in enumerate(kinds):
        ax.add_patch(FancyBboxPatch((x, y + i * size), size, size, boxstyle="square,pad=0", **_fill(kind)))


def _save(fig: Figure, path: Path) -> Path:
    """Save ``fig`` at ``path``: a deterministic SVG, or any other format the suffix names."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with matplotlib.rc_context(SVG_RC):
        fig.savefig(path, metadata={"Date": None} if path.suffix == ".svg" else None, facecolor="white")
    return path


def filename(draw: Callable[[Path], Path]) -> str:
    """The file a diagram function writes: ``diagram-<its name with hyphens>.svg``."""
    return f"diagram-{draw.__name__.replace('_', '-')}.svg"


def title(draw: Callable[[Path], Path]) -> str:
    """A diagram's title: the first line of its function's docstring."""
    return (draw.__doc__ or draw.__name__).strip().splitlines()[0].rstrip(".")


# ---------------------------------------------------------------------------------------
# lessons 02 and 03: the IOI prompt; lesson 03: patching


def ioi_prompt(out: Path) -> Path:
    """The IOI prompt and its corruption: which tokens change, where the answer is read.

    Lesson 03's clean and corrupted prompts (the names exchanged everywhere), their roles (S1, IO,
    S2, end) and the logit difference read at the last position (lessons 02 and 03).
    """
    fig, ax = _canvas(12.5, 4.7, "The IOI prompt and its corruption")
    words = ["After", " Nora", " and", " Dan", " arrived", " …", ",", " Nora", " passed", " the", " flower", " to"]
    swapped = [{" Nora": " Dan", " Dan": " Nora"}.get(w, w) for w in words]
    roles = {1: "S1", 3: "IO", 7: "S2", 11: "end"}
    widths = [max(_width(a), _width(b)) for a, b in zip(words, swapped)]
    for kind, y, row in (("clean", 3.0, words), ("corrupt", 1.25, swapped)):
        kinds = [kind if i in roles else "plain" for i in range(len(row) - 1)] + ["read"]
        centres = _tokens(ax, 1.45, y, row, kinds, widths)
        name = "clean" if kind == "clean" else "corrupted"
        ax.text(0.25, y + 0.18, name, va="center", fontsize=11, weight="bold", color=STYLE[kind][1])
        _arrow(ax, (centres[-1] + 0.3, y + 0.18), (9.7, y + 0.18))
    for i, role in roles.items():
        ax.text(centres[i], 3.5, role, ha="center", fontsize=10, weight="bold", color=GREY)
        if role != "end":
            _arrow(ax, (centres[i], 2.97), (centres[i], 1.65), color=STYLE["corrupt"][1], both=True)
    _box(ax, 9.7, 2.82, 2.6, 0.72, "next token: Dan (answer)\nnot Nora (distractor)", "read")
    _box(ax, 9.7, 1.07, 2.6, 0.72, "next token: Nora (answer)\nnot Dan (distractor)", "read")
    reading = "read at the last position\n(batch.last), ' to':\nlogit[answer] − logit[distractor]"
    _note(ax, 9.7, 2.62, reading, color=STYLE["read"][1])
    _note(
        ax, 1.45, 4.1, "A transfer story: the answer is the name given once (IO); the subject is named twice (S1, S2)."
    )
    _note(ax, 1.45, 0.95, "exchange_names(text, a, b): every whole-word Nora becomes Dan and every Dan becomes Nora.")
    _note(
        ax,
        1.45,
        0.66,
        "Every other token stays where it was, so position p of one run can be patched into position p of the other.",
    )
    return _save(fig, out / filename(ioi_prompt))


def _run_grid(ax: Axes, x: float, y: float, run: str, names: list[str], kind: str, **marks) -> list[tuple]:
    """One run as a grid of activations (rows: the residual stream before each layer; columns:
    positions) with its tokens and ``run`` below and its logit difference ``marks["ld"]`` read
    above the last position; ``marks["patched"]`` is the (layer, position) of a copied activation.
    Returns each cell's centre, layer by layer."""
    cell, roles = 0.52, ["S1", "IO", "S2", "end"]
    sites = [(layer, p) for layer in range(4) for p in range(4)]
    centres = [(x + p * cell + 0.23, y + layer * cell + 0.23) for layer, p in sites]
    for (cx, cy), site in zip(centres, sites):
        _box(ax, cx - 0.23, cy - 0.23, 0.46, 0.46, "", "act" if marks.get("patched") == site else kind)
    for layer in range(4):
        ax.text(x - 0.12, centres[4 * layer][1], str(layer), ha="right", va="center", fontsize=9, color=GREY)
    for (cx, _), role, name in zip(centres, roles, names):
        ax.text(cx, y - 0.18, name, ha="center", va="top", fontsize=9, family="monospace")
        ax.text(cx, y - 0.45, role, ha="center", va="top", fontsize=8, color=GREY)
    ax.text(x + 1.0, y - 0.8, run, ha="center", va="top", fontsize=11, weight="bold", color=STYLE[kind][1])
    top = (centres[-1][0], y + 4 * cell - 0.05)
    _arrow(ax, top, (top[0], top[1] + 0.4))
    ax.text(top[0] + 0.1, top[1] + 0.3, marks["ld"], va="center", fontsize=10, weight="bold")
    return centres


def patching_grid(out: Path) -> Path:
    """Activation patching: a clean run, a corrupted run, one activation copied, one metric.

    Lesson 03's sweep: the clean activation at one (layer, position) replaces the corrupted one,
    and the normalised logit difference says how much of the clean answer that brings back.
    """
    fig, ax = _canvas(13.5, 6.3, "Activation patching: copy one clean activation into the corrupted run")
    y, corrupted = 1.7, [" Dan", " Nora", " Dan", " to"]
    clean = _run_grid(ax, 0.75, y, "clean run", [" Nora", " Dan", " Nora", " to"], "clean", ld="LD_clean")
    _run_grid(ax, 4.15, y, "corrupted run", corrupted, "corrupt", ld="LD_corrupted")
    patched = _run_grid(ax, 7.55, y, "patched run", corrupted, "corrupt", ld="LD", patched=(3, 1))
    ax.text(0.3, y + 1.0, "before layer l", rotation=90, ha="center", va="center", fontsize=9, color=GREY)
    copy = "copy clean_cache[blocks.l.hook_resid_pre][:, p]"
    _arrow(ax, clean[13], patched[13], copy, color=STYLE["act"][1], rad=-0.5, rise=1.75)
    metric = "normalised_logit_diff\n(LD − LD_corrupted)\n/ (LD_clean − LD_corrupted)\n0: nothing restored\n"
    metric += "1: the clean answer back"
    _box(ax, 10.55, 2.75, 2.75, 1.45, metric, "read", size=9.5)
    _arrow(ax, (9.85, 4.03), (10.5, 3.75))
    sweep = (
        "One score per (layer, position):\nact_patch_by_position runs one\npass per layer, copy j of the\n"
        "corrupted batch taking the clean\nactivation at position j."
    )
    _note(ax, 10.55, 2.6, sweep)
    legend = (
        "LD: the mean logit difference (answer − distractor) at ' to'. The same copy works for attn_out, mlp_out "
        "and each head's hook_z, hook_q, hook_k, hook_v."
    )
    _note(ax, 0.75, 0.45, legend)
    return _save(fig, out / filename(patching_grid))


# ---------------------------------------------------------------------------------------
# lesson 05: steering


def probe_to_steer(out: Path) -> Path:
    """From a direction to a steering vector: built at the names, added to the stream, read at the next word.

    Lesson 05's pipeline: a difference of means (or a probe's row, or a random control) at the
    subject's name, rescaled, added with a hook at a stage of the residual stream while the model
    reads a prompt that stops where the feeling is chosen, and read as next-word probabilities and
    as generated text.
    """
    fig, ax = _canvas(13.5, 6.0, "From a direction to a steering vector")
    _box(
        ax, 0.5, 4.3, 3.5, 0.85, "x: the residual stream at the subject's name,\nlabelled y by the feeling (lesson 04)"
    )
    mean_diff = (
        "difference of means\nsteering_vector(x, y, target):\n"
        "the target's mean minus the mean\nof the other classes' means"
    )
    probe = "probe direction\na logistic-regression probe (fit_probe):\nits weight row, centred over classes"
    control = "control: random_like(vector, seed)\na random direction, the same norm"
    directions = [(2.95, 1.05, "act", mean_diff), (1.75, 0.9, "act", probe), (0.55, 0.85, "ghost", control)]
    for y, h, kind, text in directions:
        _box(ax, 0.5, y, 3.5, h, text, kind, size=9.5)
        _arrow(ax, (4.05, y + h / 2), (4.55, 2.75))
    _arrow(ax, (2.25, 4.28), (2.25, 4.03))
    _arrow(ax, (0.5, 4.72), (0.5, 2.2), rad=0.35)
    _box(ax, 4.6, 2.3, 2.5, 0.9, "rescale to length\nc × NORM[stage]", "act")
    _note(ax, 4.6, 2.15, "NORM: the stream's mean\nlength at the names")
    hook = "add_vector(vector, start, stop): a hook on\nHOOKS[stage] (here after the last layer)\n"
    _note(ax, 4.6, 4.0, hook + "adds it at every prompt position after BOS", color=STYLE["act"][1])
    stream = 8.9  # the residual stream, bottom to top
    ax.plot([stream, stream], [0.7, 4.3], color=STREAM, linewidth=7, solid_capstyle="butt", zorder=0)
    for y, block in ((1.1, "embed"), (1.75, "earlier layers"), (2.4, "last layer"), (3.75, "unembed")):
        _box(ax, stream - 0.8, y, 1.6, 0.45, block)
    _box(ax, 7.4, 0.25, 3.0, 0.45, "Ann was in the park. Ann felt", size=9.5, family="monospace")
    _note(ax, 10.55, 0.6, "the prompt stops where\nthe feeling is chosen")
    ax.add_patch(Circle((stream, 3.3), 0.2, **_fill("act")))
    ax.text(stream, 3.3, "+", ha="center", va="center", fontsize=15, weight="bold", color=STYLE["act"][1])
    _arrow(ax, (7.15, 2.9), (stream - 0.25, 3.28), color=STYLE["act"][1])
    _arrow(ax, (stream + 0.85, 4.0), (10.75, 4.35))
    _arrow(ax, (stream + 0.85, 3.95), (10.75, 2.95))
    _box(ax, 10.8, 3.95, 2.5, 0.95, "next_word_probs:\nP(each emotion word)\nafter 'felt' → P(target)", "read")
    _box(ax, 10.8, 2.45, 2.5, 0.95, "greedy_continue, then\nread_continuation:\ntarget rate, fluency", "read")
    scorer = "Storyworld's generator\nreads which feeling each\ncontinuation expresses and\nwhether it is still valid."
    _note(ax, 10.8, 2.25, scorer)
    return _save(fig, out / filename(probe_to_steer))


# ---------------------------------------------------------------------------------------
# lesson 06: sparse autoencoders


def sae_forward_pass(out: Path) -> Path:
    """A TopK sparse autoencoder's forward pass: encode, keep the k largest, decode, and the error left over.

    Lesson 06's exercise 1 (``topk_sae``) and 4 (``splice``); the strips' lengths are drawn, not
    the SAE's sizes.
    """
    fig, ax = _canvas(13.4, 6.6, "A TopK sparse autoencoder, forward pass")
    d_in, d_sae, chosen = 10, 24, {3, 9, 16, 21}  # the chosen latents are the largest pre-activations
    strips = [  # x, y, each entry's kind, square size, label
        (0.9, 2.4, ["clean"] * d_in, 0.22, "x  [d_in]\nthe residual stream\nafter the last layer"),
        (4.1, 1.5, ["act" if i in chosen else "plain" for i in range(d_sae)], 0.16, "pre  [d_sae]\npre-activations"),
        (7.25, 1.5, ["act" if i in chosen else "ghost" for i in range(d_sae)], 0.16, "latents f  [d_sae]\nk active"),
        (10.4, 2.4, ["clean"] * d_in, 0.22, "x̂  [d_in]\nthe reconstruction"),
    ]
    for x, y, kinds, size, label in strips:
        _cells(ax, x, y, kinds, size)
        ax.text(x + size / 2, y + len(kinds) * size + 0.12, label, ha="center", va="bottom", fontsize=9.5)
    steps = [
        ("encode\n(x − b_dec) W_enc\n+ b_enc", "plain"),
        ("TopK\nkeep the k largest,\nReLU; every other\nlatent exactly 0", "act"),
        ("decode\nf W_dec + b_dec:\na sum of the active\nlatents' decoder rows", "plain"),
    ]
    for (x, _, _, size, _), (after, *_), (text, kind) in zip(strips, strips[1:], steps):
        left, right = x + size + 0.35, after - 0.35
        _arrow(ax, (x + size + 0.05, 3.5), (left - 0.02, 3.5))
        _box(ax, left, 2.9, right - left, 1.2, text, kind, size=9.5)
        _arrow(ax, (right + 0.02, 3.5), (after - 0.05, 3.5))
    _box(ax, 11.3, 0.85, 1.9, 1.0, "error term\ne = x − x̂\nx = x̂ + e", "corrupt")
    _arrow(ax, (1.0, 2.35), (11.25, 1.2), color=STYLE["corrupt"][1], rad=0.12, dashed=True)
    _arrow(ax, (10.51, 2.35), (11.25, 1.6), color=STYLE["corrupt"][1], dashed=True)
    use = (
        "topk_sae(x, W_enc, b_enc, W_dec, b_dec, k) returns f and x̂. splice(sae) puts x̂ in the model in place of x\n"
        "(every position but BOS): the model's loss then shows what it loses without the error term (loss recovered)."
    )
    _note(ax, 0.9, 0.6, use)
    return _save(fig, out / filename(sae_forward_pass))


# ---------------------------------------------------------------------------------------
# lesson 07: shared geometry


def _matrix(ax: Axes, x: float, y: float, width: float, rows: list[str], kind: str, label: str, right: bool = False):
    """A matrix as one strip per token row, each named on its left (or ``right``); returns the rows' centres."""
    centres = []
    for i, token in enumerate(rows):
        cy = y + (len(rows) - 1 - i) * 0.32
        _box(ax, x, cy, width, 0.24, "", kind)
        name_x, align = (x + width + 0.1, "left") if right else (x - 0.1, "right")
        ax.text(name_x, cy + 0.12, token, ha=align, va="center", fontsize=9, family="monospace")
        centres.append(cy + 0.12)
    ax.text(x + width / 2, y + len(rows) * 0.32 + 0.08, label, ha="center", va="bottom", fontsize=10)
    return centres


def emb2emb(out: Path) -> Path:
    """Emb2Emb: a map fitted between two models' token rows carries a steering vector across.

    Lesson 07: ``fit_ridge`` on the rows both models share (``T_U`` on the unembeddings, ``T_E``
    on the embeddings as a control), then ``transfer`` of the source's vectors into the target.
    """
    fig, ax = _canvas(13.6, 6.6, "Emb2Emb: a map between two models carries a steering vector across")
    rows = [" happy", " sad", " Ann", " park", " shouted", " …"]
    source = _matrix(ax, 1.2, 3.3, 2.2, rows, "clean", "storyworld-4l (source)\nW_U: a row per token [vocab, d₁]")
    target_label = "storyworld-llama (target)\nW_U: a row per token [vocab, d₂]"
    target = _matrix(ax, 9.9, 3.3, 1.7, rows, "read", target_label, right=True)
    ax.plot([3.45, 9.85], [source[0], target[0]], color="#999999", linewidth=0.9, linestyle=":")
    ax.text(6.65, source[0] + 0.06, "row i of each: the same token", ha="center", va="bottom", fontsize=9, color=GREY)
    fit = (
        "T_U = fit_ridge(x, y, lam)  [d₁, d₂]\nminimises ‖x T − y‖² + lam ‖T‖²\n"
        "on the rows of every token training used\n(T_E: the same fit on the two W_E, a control)"
    )
    _box(ax, 4.5, 3.35, 4.3, 1.3, fit, "act", size=9.5)
    _arrow(ax, (3.5, 4.0), (4.45, 4.0), color=STYLE["act"][1])
    _arrow(ax, (8.85, 4.0), (9.8, 4.0), color=STYLE["act"][1])
    chain = [
        ("clean", "the source's steering vector:\na difference of means at the\nnames, after its last layer"),
        ("act", "transfer(vectors, t, norm, c):\nv T_U, rescaled to length\nc × norm (the target's stream)"),
        ("plain", "added after the target's\nlast layer at the prompt\n'… Ann felt'"),
        ("read", "P(target) after 'felt';\ntarget rate and fluency\nof the continuations"),
    ]
    for i, (kind, text) in enumerate(chain):
        x = 0.3 + i * 3.35
        _box(ax, x, 1.15, 2.95, 1.15, text, kind, size=9.5)
        if i:
            _arrow(ax, (x - 0.38, 1.72), (x - 0.02, 1.72))
    _arrow(ax, (6.0, 3.3), (5.3, 2.35), color=STYLE["act"][1], dashed=True)
    caveat = (
        "What travels, after the last layer: largely the emotion word's unembedding, looked up through a map fitted "
        "on the unembeddings\n(the lesson refits T_U without the feeling words, and steers with the target's own "
        "W_U rows)."
    )
    _note(ax, 0.3, 0.85, caveat)
    return _save(fig, out / filename(emb2emb))


# ---------------------------------------------------------------------------------------
# lesson 08: the capstone


def verification_chain(out: Path) -> Path:
    """How the capstone's model checks its work: heads that fetch the target, aligned GLU neurons, the verdict.

    Lesson 08's chain at each verdict site ``(``, each link with the exercise that tests it, and
    the paper's weights-only score that joins the heads to the neurons.
    """
    fig, ax = _canvas(13.8, 6.9, "Self-verification: from the target's earlier occurrences to the verdict")
    trace = "5 7 11 -> 9 : … + 11 = 1 ( not 9 ) 5 - 7 + 11 = 9 (".split()
    kinds = ["clean" if i in (4, 13) else "plain" for i in range(len(trace))]  # the target's earlier places
    kinds[-2:] = ["act", "read"]  # the result just written, the verdict site
    centres = _tokens(ax, 2.9, 4.6, trace, kinds)
    for i, kind, rad in ((4, "clean", 0.25), (13, "clean", 0.4), (len(trace) - 2, "act", 1.0)):
        _arrow(ax, (centres[-1] + 0.08, 5.0), (centres[i] - 0.05, 5.0), color=STYLE[kind][1], rad=rad)
    trace_note = "A countdown trace: operands and target, then attempts, each judged ( this works ) or ( not T )."
    _note(ax, 2.9, 6.3, trace_note)
    legend = "blue: the target where it stood before; orange: the result just written; green: the verdict site '('"
    _note(ax, 2.9, 4.45, legend)
    heads = (
        "previous-occurrence heads\nlook from '(' at the target's\n"
        "earlier occurrences and at\nthe result just written\n(attention_to_target)"
    )
    neurons = (
        "GLU neurons aligned with u\nSiLU(x·g_i) × (x·v_i) writes W_out[i];\n"
        "aligned_neurons: largest cosine\nof W_out[i] with u"
    )
    probe = "verdict direction u\nfit_verdict_probe at the '(':\nthe verdict is readable\nin the residual stream"
    verdict = "the verdict token: this or not\nverdict_margin:\nlogit(this) − logit(not)"
    chain = [("clean", heads), ("plain", neurons), ("act", probe), ("read", verdict)]
    tests = [
        "zero_heads_hook:\nablate them",
        "zero_neurons_at:\nsilence them at '('",
        "add_at_sites:\nadd ±u at '('",
        "accepts(text): does a\ncontinuation still accept?",
    ]
    for i, ((kind, text), test) in enumerate(zip(chain, tests)):
        x = 0.4 + i * 3.4
        _box(ax, x, 1.55, 2.95, 1.45, text, kind, size=9.5)
        _note(ax, x + 1.475, 1.4, test, ha="center", color=INK, fontsize=8.5)
        if i:
            _arrow(ax, (x - 0.43, 2.27), (x - 0.02, 2.27))
    _arrow(ax, (1.9, 3.05), (5.3, 3.05), color=GREY, rad=-0.3, dashed=True)
    score = "receptive_field(o, W_gate, W_in): the paper's weights-only\nscore ranks the heads by the aligned neurons"
    _note(ax, 3.6, 3.98, score, ha="center")
    caveat = (
        "Everything is measured at each verdict site '('. The arrows give the order of the analysis more than a "
        "strict path:\nsome aligned neurons sit before the heads' layer, and the verdict survives without the neurons."
    )
    _note(ax, 0.4, 0.6, caveat)
    return _save(fig, out / filename(verification_chain))


# ---------------------------------------------------------------------------------------
# which lesson shows which diagram

LESSONS: dict[str, tuple[Callable[[Path], Path], ...]] = {
    "02": (ioi_prompt,),
    "03": (ioi_prompt, patching_grid),
    "05": (probe_to_steer,),
    "06": (sae_forward_pass,),
    "07": (emb2emb,),
    "08": (verification_chain,),
}


def for_lesson(lesson: str) -> tuple[Callable[[Path], Path], ...]:
    """The diagram functions of lesson ``lesson`` ("02"), in the order its page shows them."""
    return LESSONS.get(lesson, ())


def write_lesson(lesson: str, out: Path) -> list[Path]:
    """Draw every diagram of ``lesson`` into the folder ``out``; returns the files written."""
    return [draw(out) for draw in for_lesson(lesson)]
