"""What a model trained on belief stories answers: the measurements of lesson 09 and of its card.

A story is fed as ``[BOS] + tokens(text)`` and the model is scored where it predicts the answer,
the word after ``A``. Positions count the BOS token, so a story's word ``i`` sits at position
``i + 1``. The answer is read off the whole vocabulary (argmax of the logits): the model is not
told which words could be answers.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from utils.corpora import beliefs
from utils.metrics.common import device_of, forward_logits, right_padded


@dataclass
class Questions:
    """Stories ready for a model.

    ``tokens`` [story, position]: ``[BOS] + tokens(story)`` without the answer, right-padded with
    BOS; ``at`` [story]: the position of ``A``, where the answer is predicted; ``answer`` [story]:
    the answer's token id.
    """

    tokens: torch.Tensor
    at: torch.Tensor
    answer: torch.Tensor
    stories: list

    def __len__(self) -> int:
        return len(self.stories)


def questions(stories: Sequence[beliefs.Story], tokenizer=None) -> Questions:
    """The stories as one padded batch, each cut just before its answer."""
    tokenizer = tokenizer or beliefs.load_tokenizer()
    rows = [beliefs.encode(s.text, tokenizer) for s in stories]
    at = [s.annotations["question"]["answer_at"] + 1 for s in stories]  # the A (+1: the BOS)
    return Questions(
        right_padded([r[: a + 1] for r, a in zip(rows, at)], 0),
        torch.tensor(at),
        torch.tensor([r[a + 1] for r, a in zip(rows, at)]),
        list(stories),
    )


def answer_logits(model, qs: Questions, batch: int = 256) -> torch.Tensor:
    """[story, d_vocab]: the model's logits where it predicts each story's answer."""
    device = device_of(model)
    out = []
    for start in range(0, len(qs), batch):
        rows = slice(start, start + batch)
        logits = forward_logits(model, qs.tokens[rows].to(device))
        out.append(logits[torch.arange(logits.shape[0]), qs.at[rows].to(device)].float().cpu())
    return torch.cat(out)


def correct(model, qs: Questions) -> torch.Tensor:
    """[story] bool: whether the model's top word is the story's answer."""
    return answer_logits(model, qs).argmax(-1) == qs.answer


def accuracy_by_kind(right: torch.Tensor, stories: Sequence[beliefs.Story]) -> dict[str, float]:
    """The share of questions answered right (``right`` [story] bool, as :func:`correct` gives),
    for each question kind present and for all of them (``all``)."""
    kinds = [s.kind for s in stories]
    out = {k: right[[x == k for x in kinds]].float().mean().item() for k in beliefs.KINDS if k in kinds}
    out["all"] = right.float().mean().item()
    return out


# ---------------------------------------------------------------------------------------
# Interchange interventions: run a base story with some of its activations taken from a source


def resid_name(layer: int) -> str:
    """The residual stream after block ``layer`` (``-1``: the embeddings, before block 0)."""
    return "blocks.0.hook_resid_pre" if layer < 0 else f"blocks.{layer}.hook_resid_post"


def activations(model, qs: Questions, name: str, batch: int = 256) -> torch.Tensor:
    """[story, position, ...]: the activation ``name`` on every story of ``qs``."""
    device = device_of(model)
    out = []
    for start in range(0, len(qs), batch):
        # only the cache is read: the head unembeds the last position alone (the same activations)
        _, cache = model.run_with_cache(
            qs.tokens[start : start + batch].to(device), names_filter=[name], logits_to_keep=1
        )
        out.append(cache[name].detach().cpu())
    return torch.cat(out)


def replace_at(new: torch.Tensor, pos: torch.Tensor, basis: torch.Tensor | None = None):
    """A hook that puts ``new`` [story, d_model] into the activation at ``pos`` [story] (one
    position per story); with ``basis`` [d_model, r] only the part in that subspace:
    ``x + (new - x) B Bᵀ``."""

    def hook(act, hook):
        act = act.clone()
        r = torch.arange(act.shape[0], device=act.device)
        old = act[r, pos]
        if basis is None:
            act[r, pos] = new.to(act.dtype)
        else:
            b = basis.to(act.device, act.dtype)
            act[r, pos] = old + ((new.to(act.dtype) - old) @ b) @ b.T
        return act

    return hook


def interchange(
    model,
    base: Questions,
    source: Questions,
    name: str,
    base_pos: torch.Tensor,
    source_pos: torch.Tensor | None = None,
    basis: torch.Tensor | None = None,
    batch: int = 256,
) -> torch.Tensor:
    """[story, d_vocab]: the answer logits of each base story with activation ``name`` at
    ``base_pos`` [story] (one position per story) replaced by the source story's at
    ``source_pos`` [story] (default: the same positions).

    With ``basis`` [d_model, r] (orthonormal columns) only the part of the activation in that
    subspace is replaced: ``x + (x_source - x) B Bᵀ``; the rest stays the base's.
    """
    _check_pairs(base, source)
    source_pos = base_pos if source_pos is None else source_pos
    src = activations(model, source, name, batch)[torch.arange(len(source)), source_pos]
    return _patched_answer_logits(model, base, [(name, src, base_pos)], basis, batch)


def _check_pairs(base: Questions, source: Questions) -> None:
    if len(base) != len(source):
        raise ValueError(f"base and source must pair up one to one: {len(base)} base and {len(source)} source stories")


def _patched_answer_logits(
    model,
    base: Questions,
    patches: Sequence[tuple[str, torch.Tensor, torch.Tensor]],
    basis: torch.Tensor | None = None,
    batch: int = 256,
) -> torch.Tensor:
    """[story, d_vocab]: the answer logits of each base story with every ``(name, new, pos)`` of
    ``patches`` put in at once: activation ``name`` at ``pos`` [story] replaced by ``new``
    [story, d_model] (inside ``basis`` only, if given)."""
    device = device_of(model)
    out = []
    for start in range(0, len(base), batch):
        rows = slice(start, start + batch)
        hooks = [(name, replace_at(new[rows].to(device), pos[rows].to(device), basis)) for name, new, pos in patches]
        with torch.no_grad():
            logits = model.run_with_hooks(base.tokens[rows].to(device), fwd_hooks=hooks)
        out.append(logits[torch.arange(logits.shape[0]), base.at[rows].to(device)].float().cpu())
    return torch.cat(out)


def interchange_sweep(
    model,
    base: Questions,
    source: Questions,
    positions: dict[str, torch.Tensor],
    layers: Sequence[int],
    predicted: torch.Tensor,
    batch: int = 256,
) -> torch.Tensor:
    """[position kind, layer]: the interchange accuracy (:func:`agreement` with ``predicted``
    [story]) of the residual stream after each of ``layers`` (``-1``: the embeddings), patched
    from source into base at each kind of position (``{name: [story] positions}``, the same in
    both stories). The source's streams are recorded once for every layer."""
    _check_pairs(base, source)
    names = [resid_name(layer) for layer in layers]
    device = device_of(model)
    recorded = {n: [] for n in names}
    for start in range(0, len(source), batch):
        _, cache = model.run_with_cache(
            source.tokens[start : start + batch].to(device), names_filter=names, logits_to_keep=1
        )
        for n in names:
            recorded[n].append(cache[n].detach().cpu())
    streams = {n: torch.cat(chunks) for n, chunks in recorded.items()}  # [story, position, d_model]
    out = torch.zeros(len(positions), len(layers))
    for i, pos in enumerate(positions.values()):
        for j, n in enumerate(names):
            new = streams[n][torch.arange(len(source)), pos]
            out[i, j] = agreement(_patched_answer_logits(model, base, [(n, new, pos)], batch=batch), predicted)
    return out


def interchange_sites(
    model,
    base: Questions,
    source: Questions,
    sites: Sequence[tuple[int, torch.Tensor]],
    batch: int = 256,
) -> torch.Tensor:
    """[story, d_vocab]: the answer logits of each base story with the residual stream after
    ``layer`` at ``positions`` [story] replaced by the source story's there (the same positions in
    both), for every ``(layer, positions)`` of ``sites`` at once: several variables moved together."""
    _check_pairs(base, source)
    rows = torch.arange(len(source))
    recorded = {layer: activations(model, source, resid_name(layer), batch) for layer in {layer for layer, _ in sites}}
    patches = [(resid_name(layer), recorded[layer][rows, pos], pos) for layer, pos in sites]  # each layer run once
    return _patched_answer_logits(model, base, patches, batch=batch)


def agreement(logits: torch.Tensor, predicted: Sequence[int] | torch.Tensor) -> float:
    """Interchange-intervention accuracy: the share of stories whose top word is the one the
    causal model predicts under the same intervention."""
    return (logits.argmax(-1) == torch.as_tensor(predicted)).float().mean().item()


# ---------------------------------------------------------------------------------------
# Subspaces: where in the stream a variable lives


def orthonormal(vectors: torch.Tensor) -> torch.Tensor:
    """[d_model, r]: an orthonormal basis of the span of the columns of ``vectors`` [d_model, r]."""
    q, _ = torch.linalg.qr(vectors.float())
    return q


def random_basis(d_model: int, rank: int, seed: int) -> torch.Tensor:
    """[d_model, rank]: a random subspace of the stream (uniform over subspaces), from ``seed``."""
    g = torch.Generator().manual_seed(seed)
    return orthonormal(torch.randn(d_model, rank, generator=g))


def mean_difference_basis(x: torch.Tensor, labels: torch.Tensor, rank: int) -> torch.Tensor:
    """[d_model, rank]: the baseline subspace of a variable, from activations ``x`` [n, d_model]
    whose values are ``labels`` [n]: the span of the class means minus the overall mean, its top
    ``rank`` principal directions (one class fewer than there are values at most)."""
    classes = labels.unique()
    means = torch.stack([x[labels == c].mean(0) for c in classes]) - x.mean(0)
    _, _, vh = torch.linalg.svd(means.float(), full_matrices=False)
    return vh[:rank].T.contiguous()


def fit_subspace(
    model,
    base: Questions,
    source: Questions,
    name: str,
    base_pos: torch.Tensor,
    target: torch.Tensor,
    rank: int,
    source_pos: torch.Tensor | None = None,
    steps: int = 200,
    lr: float = 1e-2,
    batch: int = 64,
    seed: int = 0,
) -> torch.Tensor:
    """[d_model, rank]: distributed alignment search. Learns the rank-``rank`` subspace at ``name``
    whose interchange (base ← source, at ``base_pos``/``source_pos``) makes the model answer
    ``target`` [story] (the causal model's prediction), by gradient descent on the cross-entropy
    of the patched answers; the model's weights stay as they are."""
    from torch.nn.utils.parametrizations import orthogonal

    source_pos = base_pos if source_pos is None else source_pos
    device = device_of(model)
    src = activations(model, source, name)[torch.arange(len(source)), source_pos].to(device)
    d_model = src.shape[-1]
    g = torch.Generator().manual_seed(seed)
    layer = torch.nn.Linear(rank, d_model, bias=False)
    with torch.no_grad():
        layer.weight.copy_(random_basis(d_model, rank, seed))
    rotation = orthogonal(layer).to(device)  # weight [d_model, rank] stays orthonormal
    opt = torch.optim.Adam(rotation.parameters(), lr=lr)
    # the rate falls linearly to zero: the last steps settle instead of jumping around the optimum
    schedule = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 1 - step / steps)
    frozen = [p for p in model.parameters() if p.requires_grad]
    for p in frozen:
        p.requires_grad_(False)
    try:
        for _ in range(steps):
            rows = torch.randint(len(base), (min(batch, len(base)),), generator=g)
            patch = replace_at(src[rows], base_pos[rows].to(device), rotation.weight)
            logits = model.run_with_hooks(base.tokens[rows].to(device), fwd_hooks=[(name, patch)])
            at = logits[torch.arange(len(rows)), base.at[rows].to(device)]
            loss = torch.nn.functional.cross_entropy(at.float(), target[rows].to(device))
            opt.zero_grad()
            loss.backward()
            opt.step()
            schedule.step()
    finally:
        for p in frozen:
            p.requires_grad_(True)
    return rotation.weight.detach().cpu()


# ---------------------------------------------------------------------------------------
# Heads: who looks where from the answer's position


def attention_from_answer(model, qs: Questions, batch: int = 256) -> torch.Tensor:
    """[story, layer, head, key]: every head's attention from the ``A`` of each story."""
    names = [f"blocks.{layer}.attn.hook_pattern" for layer in range(model.cfg.n_layers)]
    device = device_of(model)
    out = []
    for start in range(0, len(qs), batch):
        rows = slice(start, start + batch)
        _, cache = model.run_with_cache(qs.tokens[rows].to(device), names_filter=names, logits_to_keep=1)
        at = qs.at[rows].to(device)
        r = torch.arange(len(at), device=device)
        out.append(torch.stack([cache[n][r, :, at] for n in names], 1).detach().cpu())
    return torch.cat(out)


# ---------------------------------------------------------------------------------------
# The card: behaviour on held-out stories


def visibility_blind(story: beliefs.Story) -> str:
    """The answer of a reader who ignores who can see whom: what the container holds if the asked
    character filled it, ``unknown`` otherwise. Right on about four questions in five, wrong on
    every question that needs visibility (``seen``, ``false``)."""
    who, which = story.plan.question
    return story.reality[story.plan.containers[which]] if who == which else beliefs.UNKNOWN


def story_loss(model, stories: Sequence[beliefs.Story]) -> dict:
    """Loss on whole stories (``[BOS] + tokens + [EOT]``) against the generator's exact floor
    (``utils.metrics.loss.sequence_loss``)."""
    from utils.metrics.loss import sequence_loss

    tok = model.tokenizer
    return sequence_loss(model, [beliefs.encode(s.text, tok) + [0] for s in stories], [s.logprob for s in stories])


def beliefs_card(model, seed: int, n_stories: int = 2000) -> dict:
    """The belief model's card: loss against the generator's floor (on training-like stories, each
    with its follow-up questions), accuracy by question kind on
    two-character stories (as trained) and on three-character ones (never trained on), and the
    visibility-blind reader's accuracy on both, the baseline a model must beat."""
    tok = model.tokenizer
    two = beliefs.sample_stories(seed, n_stories)
    three = beliefs.sample_stories(seed, n_stories, more_characters=True)
    # the loss on what the model was trained on: the same stories with their follow-up questions
    # (after a lesson story's answer the model expects the next question, not the end of the text)
    out = story_loss(model, beliefs.sample_training(seed, n_stories))
    out["stories"] = n_stories
    for label, stories in (("", two), ("_three", three)):
        qs = questions(stories, tok)
        acc = accuracy_by_kind(correct(model, qs), stories)
        out[f"accuracy{label}"] = acc.pop("all")
        out.update({f"accuracy{label}_{kind}": v for kind, v in acc.items()})
        out[f"visibility_blind{label}"] = sum(visibility_blind(s) == s.answer for s in stories) / len(stories)
        out[f"kinds{label}"] = {k: sum(s.kind == k for s in stories) for k in beliefs.KINDS}
    out["accuracy_three_over_blind"] = out["accuracy_three"] - out["visibility_blind_three"]
    return out
