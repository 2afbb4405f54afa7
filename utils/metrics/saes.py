"""What a sparse autoencoder keeps and loses: sparsity, reconstruction, the model's loss with
the SAE spliced in, dead and dense latents, and how well one latent detects a labelled variable.

Conventions: activations are ``[token, d_in]`` rows of the residual stream at the SAE's hook,
latents ``[token, d_sae]``; a latent is *active* on a token when its activation is above zero.
A document is fed as ``[BOS] + tokens(text)`` (as in :mod:`utils.metrics.loss`); the SAE
replaces the stream at every position but the BOS one: BOS carries none of a document's
variables, and no SAE in the zoo was trained on it.
"""

from __future__ import annotations

import torch

from utils import storyworld
from utils.metrics.common import device_of, right_padded
from utils.metrics.loss import per_token_loss
from utils.tokenizer import encode_doc, load_tokenizer

DENSE = 0.1  # a latent active on more than this share of tokens is called dense


def l0(latents: torch.Tensor) -> float:
    """Mean number of active latents per token: ``[token, d_sae]`` -> a number."""
    return (latents > 0).float().sum(-1).mean().item()


def explained_variance(x: torch.Tensor, x_hat: torch.Tensor) -> float:
    """Share of the activations' variance the reconstruction keeps: ``1 - Σ‖x - x̂‖² / Σ‖x - x̄‖²``
    over all tokens and dimensions (``x``, ``x_hat``: ``[token, d_in]``)."""
    x, x_hat = x.double(), x_hat.double()
    return (1 - (x - x_hat).pow(2).sum() / (x - x.mean(0)).pow(2).sum()).item()


def firing_rates(latents: torch.Tensor) -> torch.Tensor:
    """Share of tokens on which each latent is active: ``[token, d_sae]`` -> ``[d_sae]``."""
    return (latents > 0).float().mean(0)


def dead_and_dense(latents: torch.Tensor, dense: float = DENSE) -> tuple[float, float]:
    """Shares of latents never active on these tokens (dead) and active on more than ``dense``
    of them (dense)."""
    rates = firing_rates(latents)
    return (rates == 0).float().mean().item(), (rates > dense).float().mean().item()


def loss_recovered(clean: float, spliced: float, zero: float) -> float:
    """How much of the loss the SAE keeps, on the scale from zero-ablating the activation (0)
    to leaving it alone (1): ``(zero - spliced) / (zero - clean)``."""
    return (zero - spliced) / (zero - clean)


def splice_hook(sae, keep_first: bool = True):
    """A forward hook that replaces the activation ``[batch, pos, d_in]`` by the SAE's
    reconstruction (all positions but the first, the BOS, when ``keep_first``)."""

    def hook(act, hook=None):
        out = sae(act)
        if keep_first:
            out[:, 0] = act[:, 0]
        return out

    return hook


def zero_hook(keep_first: bool = True):
    """A forward hook that zeroes the activation (all positions but the BOS when ``keep_first``)."""

    def hook(act, hook=None):
        out = torch.zeros_like(act)
        if keep_first:
            out[:, 0] = act[:, 0]
        return out

    return hook


def document_batches(docs: list[storyworld.Doc], batch_tokens: int = 8000):
    """``(tokens [b, pos], mask [b, pos])`` batches of documents fed as ``[BOS] + tokens + [EOS]``,
    documents of similar length together (about ``batch_tokens`` tokens a batch, little padding);
    ``mask`` marks the positions whose next token is part of the document."""
    tok = load_tokenizer()
    seqs = sorted((encode_doc(d.text, tok) for d in docs), key=len)
    start = 0
    while start < len(seqs):
        stop = start + 1
        while stop < len(seqs) and (stop - start + 1) * len(seqs[stop]) <= batch_tokens:
            stop += 1
        group = seqs[start:stop]
        x = right_padded(group, seqs[0][0])
        mask = torch.zeros_like(x, dtype=torch.bool)
        for i, s in enumerate(group):
            mask[i, : len(s) - 1] = True
        yield x, mask
        start = stop


@torch.no_grad()
def evaluate_sae(model, sae, hook: str, docs: list[storyworld.Doc]) -> dict:
    """Every number on an SAE's card, measured on ``docs``.

    ``l0``, ``explained_variance``, ``mse`` (per token, summed over dimensions) on the
    document tokens after BOS; the model's next-token loss clean, with the SAE spliced in at
    ``hook`` and with the activation zeroed, ``loss_recovered``; ``dead`` and ``dense`` shares
    of latents; ``tokens``.
    """
    device = device_of(model)
    acts, recons, latents = [], [], []
    losses = {"clean": [], "spliced": [], "zero": []}
    hooks = {"clean": [], "spliced": [(hook, splice_hook(sae))], "zero": [(hook, zero_hook())]}
    for x, mask in document_batches(docs):
        x, mask = x.to(device), mask.to(device)
        for kind, fwd_hooks in hooks.items():
            if kind == "clean":
                logits, cache = model.run_with_cache(x, names_filter=lambda name: name == hook)
            else:
                with model.hooks(fwd_hooks=fwd_hooks):
                    logits = model(x)
            losses[kind].append(per_token_loss(logits, x)[mask[:, :-1]].cpu())
        keep = mask.clone()
        keep[:, 0] = False  # BOS
        a = cache[hook][keep]
        f = sae.encode(a)
        acts.append(a.cpu())
        latents.append(f.cpu())
        recons.append(sae.decode(f).cpu())
    a, f, r = torch.cat(acts), torch.cat(latents), torch.cat(recons)
    loss = {kind: torch.cat(v).mean().item() for kind, v in losses.items()}
    dead, dense = dead_and_dense(f)
    return {
        "tokens": len(a),
        "l0": l0(f),
        "explained_variance": explained_variance(a, r),
        "mse": (a - r).pow(2).sum(-1).mean().item(),
        "loss_clean": loss["clean"],
        "loss_spliced": loss["spliced"],
        "loss_zero": loss["zero"],
        "loss_recovered": loss_recovered(loss["clean"], loss["spliced"], loss["zero"]),
        "dead": dead,
        "dense": dense,
    }


def detector_scores(latents: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
    """Each latent as a detector of a yes/no label: active (> 0) means "yes".

    ``latents [token, d_sae]``, ``labels [token]`` (bool) -> ``precision``, ``recall`` and
    ``f1``, each ``[d_sae]`` (0 where undefined).
    """
    active = latents > 0
    labels = labels.bool()
    hits = (active & labels[:, None]).float().sum(0)
    fired = active.float().sum(0)
    positives = labels.float().sum()
    precision = torch.where(fired > 0, hits / fired.clamp(min=1), torch.zeros_like(hits))
    recall = hits / positives.clamp(min=1)
    f1 = torch.where(precision + recall > 0, 2 * precision * recall / (precision + recall), torch.zeros_like(hits))
    return {"precision": precision, "recall": recall, "f1": f1}
