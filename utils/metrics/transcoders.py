"""What a set of transcoders keeps and loses: per layer, how much of the MLP's output it writes and
how many latents it uses; for the model, its next-token loss with one or every MLP replaced.

Conventions as in :mod:`utils.metrics.saes`: a document is fed as ``[BOS] + tokens(text) + [EOS]``;
the transcoders replace the MLPs at every position but the BOS one, on which none was trained
(the attribution graphs of :mod:`utils.metrics.attribution` leave that position to the real MLP
too).
"""

from __future__ import annotations

import torch

from utils.corpora import storyworld
from utils.metrics.common import LOGITS_PER_BATCH, device_of, tokenizer_of, vocabulary_size
from utils.metrics.loss import per_token_loss
from utils.metrics.saes import dead_and_dense, document_batches, explained_variance, l0, loss_recovered, zero_hook
from utils.model_zoo.transcoders import Transcoder, decode, encode


def splice_hooks(transcoders: list[Transcoder], layers) -> list[tuple[str, object]]:
    """Forward hooks that replace the MLP output of each of ``layers`` by its transcoder's, after BOS."""
    hooks, seen = [], {}
    for layer in layers:
        tc = transcoders[layer]

        def keep_input(x, hook, layer=layer):
            seen[layer] = x
            return x

        def replace_output(y, hook, tc=tc, layer=layer):
            out = decode(tc, encode(tc, seen[layer].float())).to(y.dtype)
            return torch.cat([y[:, :1], out[:, 1:]], dim=1)

        hooks += [(f"blocks.{layer}.mlp.hook_in", keep_input), (f"blocks.{layer}.hook_mlp_out", replace_output)]
    return hooks


def zero_hooks(layers) -> list[tuple[str, object]]:
    """Forward hooks that zero the MLP output of each of ``layers`` after BOS."""
    return [(f"blocks.{layer}.hook_mlp_out", zero_hook()) for layer in layers]


@torch.no_grad()
def evaluate_transcoders(model, transcoders: list[Transcoder], docs: list[storyworld.Doc]) -> dict:
    """Every number on a transcoder set's card, measured on ``docs``.

    Per layer (lists, in layer order): ``l0`` (active latents per token), ``explained_variance`` of the MLP's
    output, ``dead`` (share of latents never active on these tokens), ``loss_spliced`` (that layer's MLP
    replaced). For the model: ``loss_clean``, ``loss_all_spliced`` (every MLP replaced), ``loss_zero`` (every
    MLP zeroed) and ``loss_recovered`` on that scale; ``tokens``.
    """
    device, tok = device_of(model), tokenizer_of(model)
    L = len(transcoders)
    batch_tokens = min(8000, max(1, LOGITS_PER_BATCH // (vocabulary_size(model) or len(tok))))
    runs = {"clean": [], "all": splice_hooks(transcoders, range(L)), "zero": zero_hooks(range(L))}
    runs.update({layer: splice_hooks(transcoders, [layer]) for layer in range(L)})
    losses = {kind: [] for kind in runs}
    ins, outs = [[] for _ in range(L)], [[] for _ in range(L)]
    names = {f"blocks.{i}.mlp.hook_in" for i in range(L)} | {f"blocks.{i}.hook_mlp_out" for i in range(L)}
    for x, mask in document_batches(docs, batch_tokens, tokenizer=tok):
        x, mask = x.to(device), mask.to(device)
        for kind, hooks in runs.items():
            if kind == "clean":
                logits, cache = model.run_with_cache(x, names_filter=lambda n: n in names)
            else:
                with model.hooks(fwd_hooks=hooks):
                    logits = model(x)
            losses[kind].append(per_token_loss(logits, x)[mask[:, :-1]].cpu())
        keep = mask.clone()
        keep[:, 0] = False
        for i in range(L):
            ins[i].append(cache[f"blocks.{i}.mlp.hook_in"][keep].float().cpu())
            outs[i].append(cache[f"blocks.{i}.hook_mlp_out"][keep].float().cpu())
    loss = {kind: torch.cat(v).mean().item() for kind, v in losses.items()}
    card = {"l0": [], "explained_variance": [], "dead": [], "loss_spliced": [loss[i] for i in range(L)]}
    for tc, x, y in zip(transcoders, ins, outs):
        acts = encode(tc, torch.cat(x))
        card["l0"].append(l0(acts))
        card["explained_variance"].append(explained_variance(torch.cat(y), decode(tc, acts)))
        card["dead"].append(dead_and_dense(acts)[0])
    card.update(
        tokens=sum(len(t) for t in ins[0]),
        loss_clean=loss["clean"],
        loss_all_spliced=loss["all"],
        loss_zero=loss["zero"],
        loss_recovered=loss_recovered(loss["clean"], loss["all"], loss["zero"]),
    )
    return card
