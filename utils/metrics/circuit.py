"""The IOI circuit of a model, by class, measured on held-out transfer prompts for its card.

Every head and MLP gets four numbers on ``n`` prompts of one template and one order of the
names (lesson 03's setting), for each of the two orders:

* ``direct``: its direct attribution to the answer-minus-distractor logit difference at the
  final position (the final norm's scale frozen), as a share of the clean logit difference;
* ``patching``: the normalised logit difference (0 corrupted, 1 clean) after patching its clean
  output into the run with the two names exchanged (a head at every position, an MLP at the
  final position);
* ``ablation`` (heads): the share of the clean logit difference lost when the head alone is
  mean-ablated (its mean over prompts of the same template with a third name in place of the
  repeated one);
* where a head looks from the final position: attention on the answer's name, on the subject's
  name (both mentions), and on the repeated mention (S2) alone; and its direct effect on the
  answer's and the subject's logits.

:func:`classify` names classes from those numbers by fixed rules (``RULES``), so a card's
classes can be checked against its own numbers.
"""

from __future__ import annotations

import torch

from utils.corpora.ioi_pairs import patching_pairs
from utils.interventions.sweeps import patch_sweep
from utils.model_zoo.models import norm_weight

STRONG = 0.1  # a share of the logit difference (or a normalised patching score) that counts
QUIET = 0.05  # a patching score this small counts as "patching does not see it"

RULES = {
    "subject reader": f"patching ≥ {STRONG}, and it looks at S2 more than at the two names of the opening",
    "candidate copier": (
        f"ablation costs ≥ {STRONG}, patching < {QUIET}, and ≥ half its attention is on the opening's names"
    ),
    "name mover": f"direct ≥ {STRONG}, and it looks at the answer's name at least twice as much as at the subject's",
    "subject suppressor": f"direct ≥ {STRONG}, and it lowers the subject's logit more than it raises the answer's",
    "writes the answer": f"direct ≥ {STRONG} (an MLP, or a head neither of the two above)",
    "writes against the answer": f"direct ≤ -{STRONG}",
}


def classify(c: dict) -> list[str]:
    """The classes of one component's numbers (a dict as in :func:`ioi_circuit`'s ``heads``)."""
    out = []
    is_head = "ablation" in c
    if is_head:
        opening = c["attn_answer"] + c["attn_subject"] - c["attn_s2"]
        if c["patching"] >= STRONG and c["attn_s2"] > opening:
            out.append("subject reader")
        if c["ablation"] >= STRONG and abs(c["patching"]) < QUIET and opening >= 0.5:
            out.append("candidate copier")
    if c["direct"] >= STRONG:
        if is_head and c["attn_answer"] >= 2 * c["attn_subject"]:
            out.append("name mover")
        elif is_head and c["on_subject"] < 0 and -c["on_subject"] >= c["on_answer"]:
            out.append("subject suppressor")
        else:
            out.append("writes the answer")
    if c["direct"] <= -STRONG:
        out.append("writes against the answer")
    return out


def _logit_diff(logits, answers, distractors) -> torch.Tensor:
    final = logits[:, -1]
    return final.gather(-1, answers[:, None])[:, 0] - final.gather(-1, distractors[:, None])[:, 0]


def ioi_circuit(model, seed: int, reference_seed: int, n: int = 32) -> dict:
    """The circuit on prompts that name the subject first ("subject first") and on prompts that
    name the answer first ("answer first"), each as :func:`ioi_circuit_one_order` gives it."""
    return {
        order: ioi_circuit_one_order(model, seed, reference_seed, n, subject_first=first)
        for order, first in (("subject first", True), ("answer first", False))
    }


def ioi_circuit_one_order(model, seed: int, reference_seed: int, n: int, subject_first: bool) -> dict:
    """Every head's and MLP's numbers (see the module docstring) and their classes."""
    L, H = model.cfg.n_layers, model.cfg.n_heads
    has_mlp = not model.cfg.attn_only
    device = next(model.parameters()).device
    pairs = patching_pairs(model, n=n, seed=seed, corruption="swap", subject_first=subject_first).to(device)
    ref = patching_pairs(
        model, n=n, seed=reference_seed, template=pairs.template, corruption="abc", subject_first=subject_first
    ).to(device)
    ans, dis = pairs.answers, pairs.distractors
    with torch.no_grad():
        clean_logits, cache = model.run_with_cache(pairs.clean)
        corrupted_logits = model(pairs.corrupted)
        _, ref_cache = model.run_with_cache(ref.corrupted)
    clean = _logit_diff(clean_logits, ans, dis).mean().item()
    corrupted = _logit_diff(corrupted_logits, ans, dis).mean().item()

    def patched(logits):
        return (_logit_diff(logits, ans, dis).mean() - corrupted) / (clean - corrupted)

    def kept(logits):
        return _logit_diff(logits, ans, dis).mean() / clean

    # Direct attribution: each piece through the final norm with its scale frozen.
    scale = cache["ln_final.hook_scale"][:, -1]  # [batch, 1]
    gamma = norm_weight(model)
    centre = model.cfg.normalization_type == "LN"
    w_u = model.W_U

    def through_norm(x):  # [..., batch, d_model] -> the same, as the logits see it
        x = x - x.mean(-1, keepdim=True) if centre else x
        return x / scale * gamma

    def on(x, tokens):  # [..., batch, d_model] -> [...]: mean effect on the logit of each prompt's token
        return (through_norm(x) * w_u[:, tokens].T).sum(-1).mean(-1)

    n_pos = pairs.clean.shape[1]
    tokens = pairs.clean
    rows = torch.arange(n, device=device)
    is_answer = (tokens == ans[:, None]).float()  # [batch, position]
    is_subject = (tokens == dis[:, None]).float()
    s2 = torch.zeros_like(is_subject)
    s2[rows, (is_subject * torch.arange(n_pos, device=device)).argmax(-1)] = 1.0  # the subject's last mention

    heads = {}
    for layer in range(L):
        z = cache[f"blocks.{layer}.attn.hook_z"][:, -1]  # [batch, head, d_head]
        out = torch.einsum("bhe,hed->hbd", z, model.W_O[layer])  # [head, batch, d_model]
        on_a, on_s = on(out, ans), on(out, dis)
        pattern = cache[f"blocks.{layer}.attn.hook_pattern"][:, :, -1]  # [batch, head, key]
        hook = f"blocks.{layer}.attn.hook_z"
        mask = torch.zeros(H, n_pos, H, dtype=torch.bool)
        mask[torch.arange(H), :, torch.arange(H)] = True  # patch h: head h at every position
        with torch.no_grad():
            clean_z = cache[hook]
            patch = patch_sweep(model, pairs.corrupted, hook, clean_z, mask, patched)
            means = ref_cache[hook].mean(0, keepdim=True).expand_as(clean_z)
            lost = 1 - patch_sweep(model, pairs.clean, hook, means, mask, kept)
        for h in range(H):
            heads[f"L{layer}H{h}"] = {
                "direct": round((on_a[h] - on_s[h]).item() / clean, 4),
                "patching": round(patch[h].item(), 4),
                "ablation": round(lost[h].item(), 4),
                "attn_answer": round((pattern[:, h] * is_answer).sum(-1).mean().item(), 4),
                "attn_subject": round((pattern[:, h] * is_subject).sum(-1).mean().item(), 4),
                "attn_s2": round((pattern[:, h] * s2).sum(-1).mean().item(), 4),
                "on_answer": round(on_a[h].item(), 4),
                "on_subject": round(on_s[h].item(), 4),
            }
    mlps = {}
    if has_mlp:
        last = torch.zeros(1, n_pos, dtype=torch.bool)
        last[0, -1] = True
        for layer in range(L):
            hook = f"blocks.{layer}.hook_mlp_out"
            out = cache[hook][:, -1]
            with torch.no_grad():
                patch = patch_sweep(model, pairs.corrupted, hook, cache[hook], last, patched)
            mlps[f"MLP{layer}"] = {
                "direct": round((on(out, ans) - on(out, dis)).item() / clean, 4),
                "patching": round(patch[0].item(), 4),
            }
    classes = {k: classify(v) for k, v in {**heads, **mlps}.items()}
    return {
        "prompts": n,
        "template": list(pairs.template),
        "clean_logit_diff": round(clean, 4),
        "corrupted_logit_diff": round(corrupted, 4),
        "heads": heads,
        "mlps": mlps,
        "classes": {k: v for k, v in classes.items() if v},
    }


# ---------------------------------------------------------------------------------------
# A cheaper reading for a large model: direct attribution and attribution patching of every head


def ioi_head_attribution(model, seed: int, n: int = 16, top: int = 5) -> dict:
    """Which heads matter for IOI, read for every head at the cost of a few forward passes (a model
    of 30 layers would need thousands of runs for :func:`ioi_circuit`'s patching and ablation).

    On ``n`` transfer prompts of one template for each order of the names (``patching_pairs``,
    names exchanged), each head gets:

    * ``direct``: its direct attribution to the answer-minus-distractor logit difference at the final
      position (the final norm's scale frozen), as a share of the clean logit difference;
    * ``attribution``: attribution patching, the first-order estimate of ``patching`` (lesson 03):
      ``Σ (clean z − exchanged z) · ∂metric/∂z`` over prompts, positions and the head's dimensions,
      at the run with the names exchanged, where the metric is the normalised logit difference
      (0 with the names exchanged, 1 clean);

    each the mean of the two orders. The ``top`` heads by each (largest first) are then patched for
    real, one at a time (the head's clean ``z`` at every position put into the exchanged run), and
    their normalised logit difference is ``patching``."""
    orders = [patching_pairs(model, n=n, seed=seed, corruption="swap", subject_first=f) for f in (True, False)]
    L, H = model.cfg.n_layers, model.cfg.n_heads
    device = next(model.parameters()).device
    direct, attribution, runs = torch.zeros(L, H), torch.zeros(L, H), []
    for pairs in orders:
        pairs = pairs.to(device)
        d, a, run = _attribute_heads(model, pairs)
        direct += d / len(orders)
        attribution += a / len(orders)
        runs.append(run)

    def best(table):
        return [divmod(int(i), H) for i in table.flatten().argsort(descending=True)[:top]]

    chosen = sorted(set(best(direct)) | set(best(attribution)))
    patching = {(l, h): sum(run(l, h) for run in runs) / len(runs) for l, h in chosen}

    def rows(heads):
        return [
            {
                "head": f"L{l}H{h}",
                "direct": round(direct[l, h].item(), 4),
                "attribution": round(attribution[l, h].item(), 4),
                "patching": round(patching[l, h], 4),
            }
            for l, h in heads
        ]

    return {
        "prompts": n,
        "templates": [list(p.template) for p in orders],
        "clean_logit_diff": round(sum(p.clean_diff for p in runs) / len(runs), 4),
        "corrupted_logit_diff": round(sum(p.corrupted_diff for p in runs) / len(runs), 4),
        "direct": [[round(x, 4) for x in row] for row in direct.tolist()],
        "attribution": [[round(x, 4) for x in row] for row in attribution.tolist()],
        "top_direct": rows(best(direct)),
        "top_attribution": rows(best(attribution)),
    }


class _PatchRun:
    """Patch one head's clean ``z`` into the exchanged run of one set of pairs: ``run(layer, head)``."""

    def __init__(self, model, pairs, clean_z: dict, clean_diff: float, corrupted_diff: float):
        self.model, self.pairs, self.clean_z = model, pairs, clean_z
        self.clean_diff, self.corrupted_diff = clean_diff, corrupted_diff

    def __call__(self, layer: int, head: int) -> float:
        name = f"blocks.{layer}.attn.hook_z"

        def put(z, hook):
            z = z.clone()
            z[:, :, head] = self.clean_z[name][:, :, head]
            return z

        with torch.no_grad(), self.model.hooks(fwd_hooks=[(name, put)]):
            logits = self.model(self.pairs.corrupted)
        diff = _logit_diff(logits, self.pairs.answers, self.pairs.distractors).mean().item()
        return (diff - self.corrupted_diff) / (self.clean_diff - self.corrupted_diff)


def _attribute_heads(model, pairs) -> tuple[torch.Tensor, torch.Tensor, _PatchRun]:
    """``direct`` and ``attribution`` ``[layer, head]`` on one set of pairs, and a patcher for it."""
    L = model.cfg.n_layers
    ans, dis = pairs.answers, pairs.distractors
    z_names = [f"blocks.{l}.attn.hook_z" for l in range(L)]
    keep = set(z_names) | {"ln_final.hook_scale"}
    with torch.no_grad():
        clean_logits, cache = model.run_with_cache(pairs.clean, names_filter=lambda name: name in keep)
        corrupted_logits, corrupted_cache = model.run_with_cache(pairs.corrupted, names_filter=lambda n: n in keep)
    clean = _logit_diff(clean_logits, ans, dis).mean().item()
    corrupted = _logit_diff(corrupted_logits, ans, dis).mean().item()

    # Direct attribution: each head's output at the final position through the final norm, its scale frozen.
    scale = cache["ln_final.hook_scale"][:, -1]  # [batch, 1]
    gamma = norm_weight(model)
    centre = model.cfg.normalization_type == "LN"
    w = (model.W_U[:, ans] - model.W_U[:, dis]).T  # [batch, d_model]
    direct = torch.zeros(L, model.cfg.n_heads)
    for layer in range(L):
        out = torch.einsum("bhe,hed->hbd", cache[z_names[layer]][:, -1], model.W_O[layer])  # [head, batch, d_model]
        out = out - out.mean(-1, keepdim=True) if centre else out
        direct[layer] = ((out / scale * gamma) * w).sum(-1).mean(-1).detach().cpu() / clean

    # Attribution patching: one backward pass of the normalised metric from the exchanged run. The
    # weights are frozen for it and the embeddings made a leaf, so that every z carries its total gradient.
    zs = {}

    def leaf(act, hook):
        return act.detach().requires_grad_(True)

    def kept(z, hook, name):
        z = z.clone()
        z.retain_grad()
        zs[name] = z
        return z

    frozen = [p for p in model.parameters() if p.requires_grad]
    for p in frozen:
        p.requires_grad_(False)
    try:
        with (
            torch.enable_grad(),
            model.hooks(
                fwd_hooks=[("blocks.0.hook_resid_pre", leaf)]
                + [(n, lambda z, hook, n=n: kept(z, hook, n)) for n in z_names]
            ),
        ):
            logits = model(pairs.corrupted)
            metric = (_logit_diff(logits, ans, dis).mean() - corrupted) / (clean - corrupted)
            metric.backward()
        attribution = torch.stack(
            [((cache[n] - corrupted_cache[n]) * zs[n].grad).sum((0, 1, 3)).detach().cpu() for n in z_names]
        )
    finally:
        for p in frozen:
            p.requires_grad_(True)
    return direct, attribution, _PatchRun(model, pairs, {n: cache[n] for n in z_names}, clean, corrupted)
