"""How a countdown model checks its own work: the measurements of lesson 08 and of its card.

Everything is measured at the verdict sites: the ``(`` after each attempt's result, where
the next token is ``this`` (the result is the target) or ``not``. Positions count the BOS
token, so a trace's word ``i`` sits at position ``i + 1``.

Names follow the lesson: the *verdict probe* reads the residual stream at ``(``; *aligned
neurons* are GLU neurons whose output weights point along the probe's direction;
*previous-occurrence heads* look from ``(`` back to the target's earlier occurrences (the
paper calls them previous-token heads: on a valid attempt the target is the number just
written); a head's *receptive-field score* is how strongly what it writes drives the aligned
neurons.
"""

from __future__ import annotations

import inspect
import itertools
import math
import random
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from utils.corpora import countdown
from utils.metrics.common import auroc, device_of, right_padded  # auroc: also lesson 08's reference
from utils.metrics.loss import sequence_loss
from utils.metrics.probes import fit_probe
from utils.model_zoo.models import norm_weight


@dataclass
class Sites:
    """The verdict sites of some traces.

    ``tokens`` [trace, position]: ``[BOS] + tokens(trace)``, right-padded with BOS.
    One entry per ``(`` in each of: ``row`` (its trace), ``pos`` (its position),
    ``target_pos`` (the prompt's target), ``result_pos`` (the result just written, ``pos - 1``),
    ``valid`` (the next word is ``this``), ``attempt`` (1 for a trace's first attempt ...).
    """

    tokens: torch.Tensor
    row: torch.Tensor
    pos: torch.Tensor
    target_pos: torch.Tensor
    result_pos: torch.Tensor
    valid: torch.Tensor
    attempt: torch.Tensor
    traces: list

    def __len__(self) -> int:
        return len(self.row)

    def subset(self, keep: torch.Tensor) -> Sites:
        """The sites ``keep`` (indices or a mask), with only the traces they come from."""
        rows = self.row[keep]
        used, new_row = torch.unique(rows, return_inverse=True)
        return Sites(
            self.tokens[used],
            new_row,
            *(getattr(self, k)[keep] for k in ("pos", "target_pos", "result_pos", "valid", "attempt")),
            [self.traces[i] for i in used.tolist()],
        )


def verdict_sites(traces: Sequence[countdown.Trace], tokenizer=None) -> Sites:
    """Every ``(`` of ``traces`` with what the lesson needs to know about it."""
    tokenizer = tokenizer or countdown.load_tokenizer()
    rows, cols = [], {k: [] for k in ("pos", "target_pos", "result_pos", "valid", "attempt")}
    for r, t in enumerate(traces):
        for k, a in enumerate(t.annotations["attempts"], 1):
            rows.append(r)
            cols["pos"].append(a["open"] + 1)
            cols["target_pos"].append(t.annotations["target"] + 1)
            cols["result_pos"].append(a["result"] + 1)
            cols["valid"].append(a["valid"])
            cols["attempt"].append(k)
    tokens = right_padded([countdown.encode(t.text, tokenizer) for t in traces], 0)
    return Sites(tokens, torch.tensor(rows), *(torch.tensor(cols[k]) for k in cols), list(traces))


def balanced(sites: Sites, per_class: int, seed: int = 0) -> torch.Tensor:
    """Indices of ``per_class`` valid and ``per_class`` invalid sites, drawn without replacement."""
    g = torch.Generator().manual_seed(seed)
    picks = []
    for label in (True, False):
        idx = torch.nonzero(sites.valid == label).flatten()
        if len(idx) < per_class:
            raise ValueError(f"only {len(idx)} {'valid' if label else 'invalid'} sites, {per_class} wanted")
        picks.append(idx[torch.randperm(len(idx), generator=g)[:per_class]])
    return torch.cat(picks).sort().values


def verdict_ids(tokenizer=None) -> tuple[int, int]:
    """Token ids of ``this`` and ``not``."""
    tokenizer = tokenizer or countdown.load_tokenizer()
    return tuple(tokenizer.convert_tokens_to_ids(["this", "not"]))


def run_sites(model, sites: Sites, names: Sequence[str] = (), hooks=None, batch: int = 32) -> dict:
    """Run the traces once and keep what happens at every site.

    ``hooks`` (optional) intervenes: called once per batch of traces as ``hooks(rows,
    positions)`` with the batch-local rows and positions of that batch's sites, it returns
    the ``fwd_hooks`` to run the batch with (so an intervention can act at the sites only).

    Returns ``margin`` [site] (logit of ``this`` minus logit of ``not``), ``p_this`` and
    ``p_not`` [site] (probabilities over the whole vocabulary), ``top`` [site] (the most likely
    token) and, for every hook name in ``names``, its activation at the sites ``[site, ...]``.
    A ``hook_pattern`` keeps the attention of the site's query to every key ``[site, head, key]``.

    Attention is causal, so nothing after a trace's last site can change what happens at its
    sites: traces are batched ``batch`` at a time with those of similar length, and each batch
    is cut after its last site (about half the work of running every trace to its end). Within
    a batch, traces and sites keep their order; the result is in the order of ``sites``.
    """
    this, not_ = verdict_ids(model.tokenizer)
    dev = device_of(model)
    n_rows, width = sites.tokens.shape
    need = torch.zeros(n_rows, dtype=torch.long).scatter_reduce(0, sites.row, sites.pos + 1, "amax")
    by_length = torch.argsort(need, stable=True)
    by_length = by_length[need[by_length] > 0]  # traces without a site are not run
    out: dict[str, list] = {k: [] for k in ("margin", "p_this", "p_not", "top", *names)}
    order = []
    for start in range(0, len(by_length), batch):
        rows = by_length[start : start + batch].sort().values
        local = torch.full((n_rows,), -1, dtype=torch.long)
        local[rows] = torch.arange(len(rows))
        mine = torch.nonzero(local[sites.row] >= 0).flatten()
        r, p = local[sites.row[mine]], sites.pos[mine]
        cache: dict[str, torch.Tensor] = {}

        def keep(act, hook, name, cache=cache):
            cache[name] = act.detach()  # by the name asked for: the bridge may call it by an alias

        fwd = (list(hooks(r.to(dev), p.to(dev))) if hooks else []) + [
            (n, lambda act, hook, n=n: keep(act, hook, n)) for n in names
        ]
        with torch.no_grad():
            logits = model.run_with_hooks(sites.tokens[rows, : int(need[rows].max())].to(dev), fwd_hooks=fwd)
        at = logits[r, p].float().cpu()
        probs = at.softmax(-1)
        out["margin"].append(at[:, this] - at[:, not_])
        out["p_this"].append(probs[:, this])
        out["p_not"].append(probs[:, not_])
        out["top"].append(at.argmax(-1))
        for n in names:
            act = cache[n].cpu()
            if n.endswith("hook_pattern"):  # keys after the cut get no attention (causal): pad them with 0
                pattern = act[r, :, p]
                act = torch.nn.functional.pad(pattern, (0, width - pattern.shape[-1]))
                out[n].append(act)
            else:
                out[n].append(act[r, p])
        order.append(mine)
    back = torch.argsort(torch.cat(order))
    return {k: torch.cat(v)[back] for k, v in out.items()}


def verdict_accuracy(model, sites: Sites) -> dict:
    """Teacher-forced verdicts: at every ``(``, is ``this`` above ``not`` exactly when the attempt works?"""
    m = run_sites(model, sites)["margin"]
    right = (m > 0) == sites.valid
    return {
        "verdict_accuracy": right.float().mean().item(),
        "verdict_accuracy_valid": right[sites.valid].float().mean().item(),
        "verdict_accuracy_invalid": right[~sites.valid].float().mean().item(),
        "verdict_sites": len(sites),
    }


# ---------------------------------------------------------------------------------------
# Probes


def resid_names(n_layers: int) -> list[str]:
    """``hook_embed`` (what the token alone gives), then every layer's ``resid_post``."""
    return ["hook_embed"] + [f"blocks.{layer}.hook_resid_post" for layer in range(n_layers)]


def probe_by_layer(train: dict, y_train: torch.Tensor, test: dict, y_test: torch.Tensor, seed: int = 0) -> dict:
    """Held-out accuracy of a logistic-regression probe for the verdict at every stream in
    ``train``/``test`` (``{hook name: [site, d_model]}``), with a shuffled-label control at each.

    Returns ``accuracy`` and ``shuffled`` ({name: accuracy}) and ``directions`` ({name: unit
    vector [d_model]} pointing from "not" to "this" in the raw residual stream).
    """
    g = torch.Generator().manual_seed(seed)
    shuffled_y = y_train[torch.randperm(len(y_train), generator=g)]
    acc, shuf, dirs = {}, {}, {}
    for name in train:
        probe = fit_probe(train[name].float(), y_train.long(), 2)
        pred = probe(test[name].float()).argmax(-1)
        acc[name] = (pred == y_test.long()).float().mean().item()
        control = fit_probe(train[name].float(), shuffled_y.long(), 2)
        shuf[name] = (control(test[name].float()).argmax(-1) == y_test.long()).float().mean().item()
        w = (probe.weight[1] - probe.weight[0]).detach()
        dirs[name] = w / w.norm()
    return {"accuracy": acc, "shuffled": shuf, "directions": dirs}


def number_embeddings(model, sites: Sites, with_target: bool = True) -> torch.Tensor:
    """``[site, 2 * d_model]``: the embeddings of the result just written and of the target, side
    by side (``[site, d_model]``, the result's alone, without the target): what the tokens the
    verdict compares give away before any layer has compared them."""
    w_e = model.W_E.detach().float().cpu()
    written = w_e[sites.tokens[sites.row, sites.result_pos]]
    return torch.cat([written, w_e[sites.tokens[sites.row, sites.target_pos]]], -1) if with_target else written


def numbers_probe(model, train: Sites, test: Sites) -> dict:
    """The probe control on :func:`number_embeddings`: held-out accuracy with the target's
    embedding (``probe_numbers_accuracy``) and with the written result's alone
    (``probe_written_accuracy``). A linear probe cannot test two embeddings for equality, but it
    can learn which written numbers are rarely a target, so this control is above chance."""
    out = {}
    for key, both in (("probe_numbers_accuracy", True), ("probe_written_accuracy", False)):
        x_tr, x_te = number_embeddings(model, train, both), number_embeddings(model, test, both)
        probe = fit_probe(x_tr, train.valid.long(), 2)
        out[key] = (probe(x_te).argmax(-1) == test.valid.long()).float().mean().item()
    return out


# ---------------------------------------------------------------------------------------
# Neurons


def aligned_neurons_of(W_out: torch.Tensor, direction: torch.Tensor, k: int) -> list[tuple[int, int]]:
    """The ``k`` neurons (layer, index) of ``W_out`` [layer, d_mlp, d_model] whose output weights
    have the largest cosine with ``direction`` [d_model], largest first."""
    W_out = W_out.detach().float().cpu()
    cos = torch.nn.functional.cosine_similarity(W_out, direction.detach().float().cpu()[None, None], dim=-1)
    return [divmod(int(i), cos.shape[1]) for i in cos.flatten().topk(k).indices]


def aligned_neurons(model, direction: torch.Tensor, max_layer: int, share: float = 0.03) -> list[tuple[int, int]]:
    """GLU neurons (layer, index) in layers ``0 .. max_layer`` whose output weights (rows of
    ``W_out``) have the largest cosine with ``direction``: the top ``share`` of those neurons."""
    W_out = model.W_out[: max_layer + 1]  # [layer, d_mlp, d_model]
    return aligned_neurons_of(W_out, direction, max(1, round(share * W_out.shape[0] * W_out.shape[1])))


def neuron_activation(acts: dict, neurons: Sequence[tuple[int, int]]) -> torch.Tensor:
    """Mean GLU activation (``hook_post``) of ``neurons`` at each site [site]."""
    cols = [acts[f"blocks.{layer}.mlp.hook_post"][:, i] for layer, i in neurons]
    return torch.stack(cols, -1).mean(-1)


FINAL_SCALE = "ln_final.hook_scale"


def margin_direction(model) -> torch.Tensor:
    """[d_model]: the final RMSNorm's weights times ``W_U[:, this] − W_U[:, not]``, so that a
    piece of the final stream divided by the stream's final scale, dotted with it, is that
    piece's direct share of the verdict margin (lesson 02's frozen scale)."""
    this, not_ = verdict_ids(model.tokenizer)
    W_U = model.W_U.detach().float().cpu()
    return norm_weight(model).float().cpu() * (W_U[:, this] - W_U[:, not_])


def neuron_direct_margin(model, acts: dict, neurons: Sequence[tuple[int, int]], scale: torch.Tensor) -> torch.Tensor:
    """What ``neurons`` write straight into the verdict margin at each site [site]: the sum of
    each one's activation times its output row, divided by the site's final scale ``scale``
    [site, 1] (``ln_final.hook_scale``) and dotted with :func:`margin_direction`.

    ``acts`` holds ``blocks.{layer}.mlp.hook_post`` [site, d_mlp] for the neurons' layers. It
    leaves out what they write through later layers.
    """
    d = margin_direction(model)
    W_out = model.W_out.detach().float().cpu()  # [layer, d_mlp, d_model]
    total = torch.zeros(scale.shape[0])
    for layer, i in neurons:
        total += acts[f"blocks.{layer}.mlp.hook_post"][:, i].float() * (W_out[layer, i] @ d)
    return total / scale.reshape(-1).float()


def holding_final_scale(scale: torch.Tensor, intervention=None):
    """An intervention for :func:`run_sites`: ``intervention`` (if any), with the final norm's
    scale at each site held at ``scale`` [site, 1], its value in a clean run.

    Zeroing what writes much of the stream also shrinks the stream, and the final RMSNorm then
    divides everything left by a smaller number: holding the scale measures the intervention
    without that compensation. Run it with ``batch`` at least the number of traces (one batch,
    so that the hooks see every site in order).
    """
    # the bridge warns that a hooked scale takes its exact, slower path: expected here
    warnings.filterwarnings("ignore", message="A forward hook edited hook_scale", category=UserWarning)

    def hooks(rows, positions):
        if len(rows) != len(scale):
            raise ValueError(f"holding the final scale needs all {len(scale)} sites in one batch, not {len(rows)}")

        def hold(act, hook):
            act = act.clone()
            act[rows, positions] = scale.to(act).reshape(len(rows), *act.shape[2:])
            return act

        return (list(intervention(rows, positions)) if intervention else []) + [(FINAL_SCALE, hold)]

    return hooks


def zero_neurons(neurons: Sequence[tuple[int, int]]):
    """An intervention for :func:`run_sites`: ``neurons``' GLU activations set to 0 at the sites only."""
    by_layer: dict[int, list[int]] = {}
    for layer, i in neurons:
        by_layer.setdefault(layer, []).append(i)
    by_layer_t = {layer: torch.tensor(idx) for layer, idx in by_layer.items()}

    def hooks(rows, positions):
        def zero(act, hook, idx):
            act = act.clone()
            act[rows[:, None], positions[:, None], idx.to(act.device)[None, :]] = 0.0
            return act

        return [
            (f"blocks.{layer}.mlp.hook_post", lambda act, hook, idx=idx: zero(act, hook, idx))
            for layer, idx in by_layer_t.items()
        ]

    return hooks


def add_at_sites(layer: int, vector: torch.Tensor):
    """An intervention for :func:`run_sites`: ``vector`` [d_model] added to the residual stream
    after ``layer`` (``blocks.{layer}.hook_resid_post``) at the sites only."""

    def hooks(rows, positions):
        def add(act, hook):
            act = act.clone()
            act[rows, positions] += vector.to(act)
            return act

        return [(f"blocks.{layer}.hook_resid_post", add)]

    return hooks


# ---------------------------------------------------------------------------------------
# Heads


def zero_heads(heads: Sequence[tuple[int, int]], at_sites_only: bool = False):
    """An intervention for :func:`run_sites`: the outputs (``hook_z``) of ``heads`` set to 0 at
    every position, as the paper does in the forward pass that writes the verdict, or with
    ``at_sites_only`` at the sites alone (what the heads do anywhere else is left as it was).
    Called with no sites (as :func:`continue_greedily` does), it zeroes every position."""
    by_layer: dict[int, list[int]] = {}
    for layer, h in heads:
        by_layer.setdefault(layer, []).append(h)

    def hooks(rows=None, positions=None):
        if at_sites_only and rows is None:
            raise ValueError("zero_heads(..., at_sites_only=True) needs the sites: use it with run_sites")

        def zero(z, hook, idx):
            z = z.clone()
            for h in idx:
                if at_sites_only:
                    z[rows, positions, h] = 0.0
                else:
                    z[:, :, h] = 0.0
            return z

        return [
            (f"blocks.{layer}.attn.hook_z", lambda z, hook, idx=list(idx): zero(z, hook, idx))
            for layer, idx in by_layer.items()
        ]

    return hooks


def attention_to_target(patterns: dict, sites: Sites, prompt_only: bool = False) -> torch.Tensor:
    """Mean attention [layer, head] from each site's ``(`` to the earlier occurrences of the target.

    The target is written in the prompt and again in every earlier ``( not T )``; the
    attention to all of them is summed (with ``prompt_only``, only the prompt's). ``patterns``
    maps ``blocks.{l}.attn.hook_pattern`` to ``[site, head, key]`` (from :func:`run_sites`).
    """
    n = len(patterns)
    keys = torch.arange(sites.tokens.shape[1])
    target_tok = sites.tokens[sites.row, sites.target_pos]  # [site]
    if prompt_only:
        mask = keys[None, :] == sites.target_pos[:, None]
    else:
        mask = (sites.tokens[sites.row] == target_tok[:, None]) & (keys[None, :] < sites.pos[:, None] - 1)
    out = []
    for layer in range(n):
        pat = patterns[f"blocks.{layer}.attn.hook_pattern"]  # [site, head, key]
        out.append((pat * mask[:, None, : pat.shape[-1]]).sum(-1).mean(0))
    return torch.stack(out)


def head_outputs(model, z: dict, layer: int) -> torch.Tensor:
    """What each head of ``layer`` writes into the residual stream [site, head, d_model], from
    its ``hook_z`` [site, head, d_head]."""
    W_O = model.W_O[layer].detach().float().cpu()  # [head, d_head, d_model]
    return torch.einsum("shd,hdm->shm", z[f"blocks.{layer}.attn.hook_z"].float(), W_O)


def receptive_field_scores(
    model, written: torch.Tensor, neurons: Sequence[tuple[int, int]], ln_scale: dict | None = None
) -> torch.Tensor:
    """How strongly what each head writes turns the ``neurons`` on [layer, head].

    ``written`` [layer, head, d_model] is one vector per head (what it writes, on average or
    from its weights). For every neuron i that reads the head (in the head's own block, whose
    MLP comes after its attention, or a later one), with gate and up
    weights g_i and u_i, the head scores ``SiLU(g_i · x) (u_i · x)``, where x is the head's
    vector through that layer's RMSNorm (divided by ``ln_scale[layer]``, the typical size of the
    stream there, default 1, and times the norm's weights); the score is the mean over those
    neurons (0 for a head with no later neuron).
    """
    L, H = written.shape[:2]
    W_gate, W_in = model.W_gate.detach().float().cpu(), model.W_in.detach().float().cpu()
    ln_weight = {layer: norm_weight(model, layer).float().cpu() for layer in {layer for layer, _ in neurons}}
    scores = torch.zeros(L, H)
    for lh in range(L):
        later = [(layer, i) for layer, i in neurons if layer >= lh]  # a block's MLP reads its own heads
        if not later:
            continue
        vals = []
        for layer, i in later:
            x = written[lh] * ln_weight[layer] / (ln_scale[layer] if ln_scale else 1.0)  # [head, d_model]
            vals.append(torch.nn.functional.silu(x @ W_gate[layer, :, i]) * (x @ W_in[layer, :, i]))
        scores[lh] = torch.stack(vals, -1).mean(-1)
    return scores


def ov_diagonal(model) -> torch.Tensor:
    """The paper code's vector for each head from its weights alone [layer, head, d_model]: the
    diagonal of the head's OV matrix, ``o[d] = sum_k W_V[d, k] W_O[k, d]``."""
    return torch.einsum("lhmk,lhkm->lhm", model.W_V.detach().float().cpu(), model.W_O.detach().float().cpu())


def paper_receptive_field(model, o: torch.Tensor, neurons: Sequence[tuple[int, int]]) -> torch.Tensor:
    """The paper's receptive-field score: for each vector in ``o`` [..., d_model], the mean over
    ``neurons`` (every one, whatever its layer) of ``SiLU(g_i · o) (u_i · o)``, with ``o`` used as it
    is (no norm) [...]."""
    W_gate = torch.stack([model.W_gate[layer][:, i] for layer, i in neurons], -1).detach().float().cpu()
    W_in = torch.stack([model.W_in[layer][:, i] for layer, i in neurons], -1).detach().float().cpu()
    return (torch.nn.functional.silu(o @ W_gate) * (o @ W_in)).mean(-1)


def previous_occurrence_heads(attention: torch.Tensor, threshold: float = 0.1) -> list[tuple[int, int]]:
    """The heads the paper keeps bottom-up: mean attention from the ``(`` to the target's earlier
    occurrences (``attention`` [layer, head], from :func:`attention_to_target`) above ``threshold``."""
    L, H = attention.shape
    return [(layer, h) for layer in range(L) for h in range(H) if attention[layer, h] > threshold]


def paper_pick(scores: torch.Tensor, kept: Sequence[tuple[int, int]], k: int = 3) -> list[tuple[int, int]]:
    """The ``k`` kept heads with the highest score (``scores`` [layer, head])."""
    return sorted(kept, key=lambda lh: -scores[lh].item())[:k]


# ---------------------------------------------------------------------------------------
# Generation


def _takes_two_arguments(fn) -> bool:
    """Whether ``fn`` can be called with two positional arguments."""
    try:
        inspect.signature(fn).bind(None, None)
    except TypeError:
        return False
    return True


def continue_greedily(
    model, prompts: Sequence[list[int]], max_new: int = 40, at_open=None, batch: int = 16
) -> list[list[int]]:
    """Greedy continuations of ``prompts`` (token lists), each until EOS or ``max_new`` tokens.

    ``at_open`` (optional) is an intervention like :func:`zero_heads`'s: it is applied in
    every forward pass whose last token is ``(`` (the pass that writes the verdict), and
    only then, as in the paper's generation test. When it takes two arguments, as
    :func:`run_sites`'s hook makers do, it gets the batch's rows and each row's last position
    (the ``(``), so that ``zero_neurons(neurons)`` silences them at the ``(`` alone, as the
    authors' code does in its neuron knock-out; with none, it is called as it is. Prompts of
    similar length run ``batch`` at a time (the result does not depend on it).
    """
    dev = device_of(model)
    open_id = model.tokenizer.convert_tokens_to_ids("(")
    takes_sites = at_open is not None and _takes_two_arguments(at_open)
    # One batch, padded on the right: attention is causal, so the padding never reaches the
    # real tokens, and each row is read at its own last position.
    lengths = torch.tensor([len(p) for p in prompts], device=dev)
    seqs = torch.zeros(len(prompts), int(lengths.max()) + max_new, dtype=torch.long, device=dev)
    for k, p in enumerate(prompts):
        seqs[k, : len(p)] = torch.tensor(p, device=dev)
    done = torch.zeros(len(prompts), dtype=torch.bool, device=dev)
    for _ in range(max_new):
        live = torch.nonzero(~done).flatten()
        if len(live) == 0:
            break
        last = seqs[live, lengths[live] - 1]
        nxt = torch.zeros(len(live), dtype=torch.long, device=dev)
        for at_verdict in (False, True):
            group = torch.nonzero((last == open_id) == at_verdict).flatten()  # indices into `live`
            group = group[torch.argsort(lengths[live[group]], stable=True)]
            for start in range(0, len(group), batch):  # rows of similar length together, each batch cut at its longest
                mine = group[start : start + batch]
                rows = live[mine]
                width = int(lengths[rows].max())
                with torch.no_grad():
                    if at_verdict and at_open is not None:
                        local = torch.arange(len(rows), device=dev)
                        fwd = at_open(local, lengths[rows] - 1) if takes_sites else at_open()
                        logits = model.run_with_hooks(seqs[rows, :width], fwd_hooks=list(fwd))
                    else:
                        logits = model(seqs[rows, :width])
                nxt[mine] = logits[torch.arange(len(rows), device=dev), lengths[rows] - 1].argmax(-1)
        seqs[live, lengths[live]] = nxt
        lengths[live] += 1
        done[live] = nxt == 0
    outs = []
    for k, p in enumerate(prompts):
        ids = seqs[k, len(p) : int(lengths[k])].tolist()
        outs.append(ids)  # ends with EOS (0) when the model wrote one within max_new tokens
    return outs


def heads_outside(n_layers: int, n_heads: int, exclude: Sequence[tuple[int, int]]) -> list:
    """Every head ``(layer, head)`` not in ``exclude``, layer by layer."""
    skip = set(exclude)
    return [(layer, h) for layer in range(n_layers) for h in range(n_heads) if (layer, h) not in skip]


def random_heads(n_layers: int, n_heads: int, k: int, exclude: Sequence[tuple[int, int]], seed: int) -> list:
    """``k`` distinct heads drawn at random from those not in ``exclude``."""
    return sorted(random.Random(seed).sample(heads_outside(n_layers, n_heads, exclude), k))


EVERY_DRAW_CAP = 500  # more heads than this many draws of three: a seeded sample of them


def every_draw_of(n_layers: int, n_heads: int, k: int, exclude: Sequence[tuple[int, int]], seed: int) -> list:
    """Every set of ``k`` heads not in ``exclude`` (sorted lists), or a seeded sample of
    ``EVERY_DRAW_CAP`` of them when there are more."""
    sets = [list(c) for c in itertools.combinations(heads_outside(n_layers, n_heads, exclude), k)]
    return sets if len(sets) <= EVERY_DRAW_CAP else random.Random(seed).sample(sets, EVERY_DRAW_CAP)


# ---------------------------------------------------------------------------------------
# The model card


def trace_loss(model, traces: Sequence[countdown.Trace], batch: int = 256) -> dict:
    """Mean next-token loss on ``[BOS] + trace + [EOS]`` and the generator's exact floor (nats/token),
    with the gap's standard error over traces (:func:`utils.metrics.loss.sequence_loss`)."""
    seqs = [countdown.encode(t.text, model.tokenizer) + [0] for t in traces]
    return sequence_loss(model, seqs, [t.logprob for t in traces], batch)


def greedy_traces(model, traces: Sequence[countdown.Trace], max_new: int = 100) -> list[dict]:
    """Each problem's prompt (through ``:``) continued greedily, judged by :func:`countdown.judge`."""
    tok = model.tokenizer
    prompts = [countdown.encode(t.text, tok)[: t.annotations["target"] + 3] for t in traces]
    hf = getattr(model, "original_model", None)
    if hf is not None and len({len(p) for p in prompts}) == 1:  # no intervention: the HF model's cached decoding
        with torch.no_grad():
            out = hf.generate(
                torch.tensor(prompts, device=device_of(model)),
                max_new_tokens=max_new,
                do_sample=False,
                eos_token_id=0,
                pad_token_id=0,
            )[:, len(prompts[0]) :].tolist()
        outs = [o[: o.index(0) + 1] if 0 in o else o for o in out]
    else:
        outs = continue_greedily(model, prompts, max_new=max_new)
    judged = []
    for t, p, o in zip(traces, prompts, outs):
        text = countdown.decode(p + o, tok)
        j = countdown.judge(text)
        j["text"] = text
        j["exact"] = text == countdown.make_trace(t.operands, t.target).text
        judged.append(j)
    return judged


def truncated_at_valid(sites: Sites, tokenizer) -> list[list[int]]:
    """For every valid site, its trace's tokens up to and including that ``(``."""
    return [sites.tokens[r, : p + 1].tolist() for r, p in zip(sites.row.tolist(), sites.pos.tolist())]


STEERING_STRENGTHS = (0.5, 1.0, 2.0, 4.0)  # × the median norm of the stream at the sites
NEURON_SHARE = 0.03  # the share of GLU neurons (in the layers up to the probe's) called aligned
RANDOM_DRAWS = 10
PICK_REFITS = 10  # bootstrap refits of the probe that show how the paper's pick moves with its sample


def continuation_accepts(model, prompts: Sequence[list[int]], at_open=None, max_new: int = 40) -> torch.Tensor:
    """Whether each prompt's greedy continuation says ``this works`` anywhere [prompt], with
    ``at_open`` applied in every pass that writes a verdict (the paper's generation test)."""
    tok = model.tokenizer
    outs = continue_greedily(model, prompts, max_new=max_new, at_open=at_open)
    return torch.tensor([" this works" in " " + countdown.decode(o, tok) for o in outs])


def countdown_card(
    model,
    seed: int,
    train_seed: int,
    n_traces: int = 2000,
    progress=None,
    every_draw: bool = True,
    ranked_heads: bool = True,
) -> dict:
    """Every number countdown-llama's card reports, on ``n_traces`` held-out traces of ``seed``
    (the probe is fitted on 1.5 times as many traces of ``train_seed``; greedy traces are
    written for a fifth of the problems). The steps follow lesson 08. ``every_draw`` adds the
    mean cost of every draw of three random heads, not only of ten (minutes on a CPU).
    ``ranked_heads=False`` leaves out every number that rests on ranking the heads (the single
    ablations, the paper's pick and its refits, the course's score, the random draws and the
    ablated continuations): about half the time, for a check that reads only the rest."""
    say = progress or (lambda step: None)
    n_probe_traces, per_class, n_greedy = n_traces * 3 // 2, (n_traces * 3 // 4, n_traces // 4), n_traces // 5
    L, H = model.cfg.n_layers, model.cfg.n_heads
    tok = model.tokenizer
    out: dict = {"seed": seed, "traces": n_traces}
    traces = countdown.sample_traces(seed, n_traces)

    say("loss")
    out.update(trace_loss(model, traces))
    test = verdict_sites(traces, tok)
    out.update(verdict_accuracy(model, test))
    slipped = torch.tensor(
        [
            t.annotations["attempts"][a - 1]["slip"] and t.annotations["attempts"][a - 1]["value"] == t.target
            for t, a in zip([traces[r] for r in test.row.tolist()], test.attempt.tolist())
        ]
    )
    m = run_sites(model, test.subset(slipped))["margin"]
    out["verdict_accuracy_slipped_solution"] = (m < 0).float().mean().item()
    out["slipped_solution_sites"] = int(slipped.sum())

    say("greedy traces")
    judged = greedy_traces(model, traces[:n_greedy])
    solvable = [j for j, t in zip(judged, traces) if t.solvable]
    out["greedy_solved"] = sum(j["accepted_correctly"] for j in solvable) / len(solvable)
    out["greedy_exact"] = sum(j["exact"] for j in judged) / len(judged)
    n_att = sum(len(j["attempts"]) for j in judged)
    out["greedy_arithmetic_error_rate"] = sum(j["arithmetic_errors"] for j in judged) / max(1, n_att)
    out["greedy_problems"] = len(judged)

    say("probe")
    train_all = verdict_sites(countdown.sample_traces(train_seed, n_probe_traces), tok)
    tr = train_all.subset(balanced(train_all, per_class[0], seed=0))
    te = test.subset(balanced(test, per_class[1], seed=1))
    names = resid_names(L)
    a_tr, a_te = run_sites(model, tr, names), run_sites(model, te, names)
    probes = probe_by_layer({n: a_tr[n] for n in names}, tr.valid, {n: a_te[n] for n in names}, te.valid)
    accs = [probes["accuracy"][n] for n in names]
    best = max(range(1, len(names)), key=lambda i: (round(accs[i], 3), i))  # ties: the later layer
    layer = best - 1
    u = probes["directions"][names[best]]
    out.update(
        probe_accuracy_by_layer=accs,
        probe_shuffled_by_layer=[probes["shuffled"][n] for n in names],
        probe_layer=layer,
        probe_best_accuracy=accs[best],
        probe_embedding_accuracy=accs[0],
        probe_shuffled_accuracy=probes["shuffled"][names[best]],
        probe_sites=[len(tr), len(te)],
    )
    out.update(numbers_probe(model, tr, te))
    lens = ((u * norm_weight(model).float().cpu()) @ model.W_U.detach().float().cpu()).argsort(descending=True)
    ranked = tok.convert_ids_to_tokens(lens.tolist())
    out["probe_lens_top"], out["probe_lens_bottom"] = ranked[:5], ranked[-5:][::-1]

    say("steering")
    scale = a_te[names[best]].norm(dim=-1).median().item()
    g = torch.Generator().manual_seed(seed)
    rnd = torch.randn(u.shape, generator=g)
    rnd /= rnd.norm()
    invalid, valid = te.subset(~te.valid), te.subset(te.valid)
    steer = []
    for alpha in STEERING_STRENGTHS:
        v = alpha * scale
        steer.append(
            {
                "alpha": alpha,
                "accept_wrong": (run_sites(model, invalid, hooks=add_at_sites(layer, v * u))["margin"] > 0)
                .float()
                .mean()
                .item(),
                "reject_right": (run_sites(model, valid, hooks=add_at_sites(layer, -v * u))["margin"] < 0)
                .float()
                .mean()
                .item(),
                "random_accept_wrong": (run_sites(model, invalid, hooks=add_at_sites(layer, v * rnd))["margin"] > 0)
                .float()
                .mean()
                .item(),
            }
        )
    out["steering"] = steer
    out["steering_scale"] = scale
    out["steer_accept_wrong"] = max(s["accept_wrong"] for s in steer)
    out["steer_reject_right"] = max(s["reject_right"] for s in steer)
    out["steer_random_accept_wrong"] = max(s["random_accept_wrong"] for s in steer)

    say("neurons")
    neurons = aligned_neurons(model, u, layer, NEURON_SHARE)
    mlp = [f"blocks.{i}.mlp.hook_post" for i in range(L)]
    acts = run_sites(model, te, mlp)
    out["aligned_neurons"] = len(neurons)
    out["aligned_neuron_layers"] = [sum(1 for n in neurons if n[0] == i) for i in range(layer + 1)]
    out["neuron_auroc"] = auroc(neuron_activation(acts, neurons), te.valid)
    # Why silencing them moves P(this) so little: what they write straight into the margin, and
    # the margin with them off, freely and with the final norm's scale held at its clean value.
    one = len(valid.tokens)  # every valid site in one batch (the held scale needs them in order)
    clean = run_sites(model, valid, [FINAL_SCALE, *mlp], batch=one)
    off = run_sites(model, valid, hooks=zero_neurons(neurons), batch=one)
    held = run_sites(model, valid, hooks=holding_final_scale(clean[FINAL_SCALE], zero_neurons(neurons)), batch=one)
    base, zeroed = clean["p_this"].mean().item(), off["p_this"].mean().item()
    out["margin_valid"] = clean["margin"].mean().item()
    out["neuron_direct_margin"] = neuron_direct_margin(model, clean, neurons, clean[FINAL_SCALE]).mean().item()
    out["neuron_zeroed_margin"] = off["margin"].mean().item()
    out["neuron_zeroed_margin_held_scale"] = held["margin"].mean().item()
    out["neuron_zeroed_flips"] = (off["margin"] < 0).float().mean().item()
    out["neuron_zeroed_flips_held_scale"] = (held["margin"] < 0).float().mean().item()
    rng = random.Random(seed)
    pool = [(i, j) for i in range(layer + 1) for j in range(model.cfg.d_mlp)]
    rand = [
        run_sites(model, valid, hooks=zero_neurons(rng.sample(pool, len(neurons))))["p_this"].mean().item()
        for _ in range(RANDOM_DRAWS)
    ]
    out["p_this_valid"] = base
    out["neuron_zeroing_drop"] = 1 - zeroed / base
    out["random_neuron_zeroing_drop"] = 1 - sum(rand) / len(rand) / base

    say("heads")
    pats = [f"blocks.{i}.attn.hook_pattern" for i in range(L)]
    zs = [f"blocks.{i}.attn.hook_z" for i in range(L)]
    scales = [f"blocks.{i}.ln2.hook_scale" for i in range(L)]
    av = run_sites(model, valid, pats + zs + scales)
    att = attention_to_target({p: av[p] for p in pats}, valid)
    out["attention_to_target"] = att.tolist()
    out["attention_to_prompt_target"] = attention_to_target({p: av[p] for p in pats}, valid, prompt_only=True).tolist()
    top_att = int(att.flatten().argmax())
    out["target_head"] = list(divmod(top_att, H))
    out["target_head_attention"] = att.flatten()[top_att].item()
    kept = previous_occurrence_heads(att)
    out["previous_occurrence_heads"] = [list(h) for h in kept]

    say("generation")
    prompts = truncated_at_valid(valid, tok)[:200]
    plain = continuation_accepts(model, prompts)
    out["generation_prompts"] = len(prompts)
    out["generation_rejects_without_ablation"] = 1 - plain.float().mean().item()
    if not ranked_heads:
        return out

    say("head ablations")

    def correct(sites, heads):
        """The share of ``sites`` still judged right with ``heads`` ablated."""
        m = run_sites(model, sites, hooks=zero_heads(heads))["margin"]
        return torch.where(sites.valid, m > 0, m < 0).float().mean().item()

    def correct_valid(heads):
        return correct(valid, heads)

    before = (clean["margin"] > 0).float().mean().item()  # the neurons' clean run, on the same sites
    single = torch.tensor([[before - correct_valid([(i, h)]) for h in range(H)] for i in range(L)])
    truth = [divmod(int(i), H) for i in single.flatten().topk(3).indices]
    out["single_head_drop"] = single.tolist()
    out["top3_single_ablation"] = [list(h) for h in truth]
    out["verdict_accuracy_valid_before"] = before

    # The paper's pipeline: the kept heads ranked by the weights-only receptive field of their OV
    # diagonal on the aligned neurons, the top three ablated.
    diag = ov_diagonal(model)
    rf = paper_receptive_field(model, diag, neurons)
    top3 = paper_pick(rf, kept)
    out["receptive_field_scores"] = rf.tolist()
    out["top3_receptive_field"] = [list(h) for h in top3]
    out["top3_overlap"] = len(set(top3) & set(truth))
    out["top3_ablation_accuracy"] = correct_valid(top3)
    out["top3_ablation_invalid_rejected"] = correct(invalid, top3)
    out["kept_heads_ablation_accuracy"] = correct_valid(kept)
    out["kept_heads_ablation_invalid_rejected"] = correct(invalid, kept)
    # How the pick moves with the probe's sample: the probe refitted on bootstrap resamples of its
    # training sites, the aligned neurons and the pick taken again each time.
    g = torch.Generator().manual_seed(train_seed)
    picks = []
    for _ in range(PICK_REFITS):
        idx = torch.randint(len(tr), (len(tr),), generator=g)
        probe = fit_probe(a_tr[names[best]][idx].float(), tr.valid[idx].long(), 2)
        w = (probe.weight[1] - probe.weight[0]).detach()
        refit = aligned_neurons(model, w / w.norm(), layer)
        picks.append(sorted(paper_pick(paper_receptive_field(model, diag, refit), kept)))
    out["paper_pick_refits"] = [[list(h) for h in p] for p in picks]
    out["paper_pick_refits_holding_truth_first"] = sum(truth[0] in p for p in picks)
    out["paper_pick_refits_count"] = PICK_REFITS

    # The course's own score, for comparison: what a head writes differently on valid and invalid
    # attempts, through the MLP's RMSNorm at the stream's typical scale, on the neurons that read it.
    ai = run_sites(model, invalid, zs)
    written = torch.stack([head_outputs(model, av, i).mean(0) - head_outputs(model, ai, i).mean(0) for i in range(L)])
    ln_scale = {i: av[scales[i]].mean().item() for i in range(L)}
    contrast = receptive_field_scores(model, written, neurons, ln_scale)
    contrast_top3 = [divmod(int(i), H) for i in contrast.flatten().topk(3).indices]
    out["top3_receptive_field_contrast"] = [list(h) for h in contrast_top3]
    out["top3_ablation_accuracy_contrast"] = correct_valid(contrast_top3)

    draws = [random_heads(L, H, 3, top3, seed + k) for k in range(RANDOM_DRAWS)]
    out["random3_ablation_drop"] = before - sum(correct_valid(d) for d in draws) / RANDOM_DRAWS
    # Ten draws are a sample: which heads they happen to hold moves the mean by several points.
    # Every draw of three from the other heads (or a seeded sample of them) gives its expectation.
    # (a few hundred forward passes: left out when ``every_draw`` is False)
    if every_draw:
        every = every_draw_of(L, H, 3, top3, seed)
        out["random3_ablation_drop_every_draw"] = before - sum(correct_valid(d) for d in every) / len(every)
        out["random3_draws_every"] = len(every)
        out["random3_draws_every_sampled"] = math.comb(L * H - len(top3), 3) > len(every)

    ablated = continuation_accepts(model, prompts, at_open=zero_heads(top3))
    rand_acc = [continuation_accepts(model, prompts, at_open=zero_heads(d)) for d in draws[:3]]
    out["generation_rejects_top3"] = 1 - ablated.float().mean().item()
    out["generation_rejects_random3"] = 1 - torch.stack(rand_acc).float().mean().item()
    return out
