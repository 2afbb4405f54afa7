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

from utils.corpora import storyworld
from utils.corpora.tokenizer import encode_doc, load_tokenizer
from utils.metrics.common import LOGITS_PER_BATCH, device_of, length_groups, right_padded, tokenizer_of, vocabulary_size
from utils.metrics.loss import per_token_loss

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


def document_batches(docs: list[storyworld.Doc], batch_tokens: int = 8000, tokenizer=None):
    """``(tokens [b, pos], mask [b, pos])`` batches of documents fed as ``[BOS] + tokens + [EOS]``
    in ``tokenizer``'s tokens (default the zoo's), documents of similar length together (about
    ``batch_tokens`` tokens a batch, fewer where the vocabulary is so large that a batch's logits
    would pass ``LOGITS_PER_BATCH``; little padding); ``mask`` marks the positions whose next
    token is part of the document."""
    tok = tokenizer or load_tokenizer()
    batch_tokens = min(batch_tokens, max(1, LOGITS_PER_BATCH // len(tok)))  # 8,000 for the zoo, 682 for SmolLM2
    seqs = sorted((encode_doc(d.text, tok) for d in docs), key=len)
    for start, stop in length_groups([len(s) for s in seqs], batch_tokens):
        group = seqs[start:stop]
        x = right_padded(group, seqs[0][0])
        mask = torch.zeros_like(x, dtype=torch.bool)
        for i, s in enumerate(group):
            mask[i, : len(s) - 1] = True
        yield x, mask


@torch.no_grad()
def evaluate_sae(model, sae, hook: str, docs: list[storyworld.Doc]) -> dict:
    """Every number on an SAE's card, measured on ``docs``.

    ``l0``, ``explained_variance``, ``mse`` (per token, summed over dimensions) on the
    document tokens after BOS; the model's next-token loss clean, with the SAE spliced in at
    ``hook`` and with the activation zeroed, ``loss_recovered``; ``dead`` and ``dense`` shares
    of latents; ``tokens``. Documents are tokenized by the model's own tokenizer, in batches
    whose logits stay within ``LOGITS_PER_BATCH``.
    """
    device = device_of(model)
    tok = tokenizer_of(model)
    batch_tokens = min(8000, max(1, LOGITS_PER_BATCH // (vocabulary_size(model) or len(tok))))
    acts, recons, latents = [], [], []
    losses = {"clean": [], "spliced": [], "zero": []}
    hooks = {"clean": [], "spliced": [(hook, splice_hook(sae))], "zero": [(hook, zero_hook())]}
    for x, mask in document_batches(docs, batch_tokens, tokenizer=tok):
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


def best_thresholded_latent(
    latents: torch.Tensor, labels: torch.Tensor, candidates: int = 30, thresholds: int = 30
) -> tuple[int, float, float]:
    """The single latent and activation threshold that detect ``labels`` best (F1) on these
    tokens: ``latents [n, d_sae]``, ``labels [n]`` bool -> ``(latent, threshold, f1)``.

    The candidates are the ``candidates`` latents with the best F1 when active (> 0) and the
    ``candidates`` with the largest mean difference between labelled and other tokens; each is
    tried at 0 and at ``thresholds`` quantiles of its positive activations."""
    labels = labels.bool()
    f1_at_zero = detector_scores(latents, labels)["f1"]
    difference = latents[labels].mean(0) - latents[~labels].mean(0)
    top = min(candidates, latents.shape[1])
    pool = set(f1_at_zero.topk(top).indices.tolist()) | set(difference.topk(top).indices.tolist())
    best = (0, 0.0, -1.0)
    for j in sorted(pool):
        values = latents[:, j]
        positive = values[values > 0]
        cuts = torch.zeros(1)
        if len(positive):
            cuts = torch.cat([cuts, torch.quantile(positive, torch.linspace(0, 1, thresholds + 1)[:-1])])
        fire = values[None, :] > cuts[:, None]  # [cut, n]
        hits = (fire & labels).sum(-1).float()
        f1 = 2 * hits / (fire.sum(-1) + labels.sum()).clamp(min=1)
        k = int(f1.argmax())
        if f1[k] > best[2]:
            best = (j, float(cuts[k]), float(f1[k]))
    return best


def counts_by_story(pred: torch.Tensor, truth: torch.Tensor, story: torch.Tensor, n: int | None = None) -> torch.Tensor:
    """Hits, false alarms and misses of a detector in each story, the unit to resample for a
    story-level bootstrap: ``[n, 3]`` indexed by ``story`` (story ids below ``n``), or, without
    ``n``, ``[stories, 3]`` with the stories present renumbered from 0 in sorted order."""
    groups = story if n is not None else torch.unique(story, return_inverse=True)[1]
    n = n if n is not None else int(groups.max()) + 1
    out = torch.zeros(n, 3)
    for column, mask in enumerate((pred & truth, pred & ~truth, ~pred & truth)):
        out[:, column].index_add_(0, groups, mask.float())
    return out


def f1_of_counts(counts: torch.Tensor) -> torch.Tensor:
    """F1 from summed ``(hits, false alarms, misses)``: ``[..., 3]`` -> ``[...]`` (0 where undefined)."""
    hits, false, missed = counts.unbind(-1)
    return 2 * hits / (2 * hits + false + missed).clamp(min=1e-12)


def bootstrap_f1_gap(a: torch.Tensor, b: torch.Tensor, n: int = 2000, seed: int = 0) -> tuple[float, float, float]:
    """F1 of detector ``a`` minus F1 of detector ``b`` on the same stories (``counts_by_story``
    of each, ``[story, 3]``), with a 95% interval from resampling the stories: ``(gap, low, high)``."""
    g = torch.Generator().manual_seed(seed)
    weights = torch.multinomial(torch.ones(len(a)), len(a) * n, replacement=True, generator=g).view(n, len(a))
    counts = torch.zeros(n, len(a)).scatter_add_(1, weights, torch.ones(n, len(a)))  # times each story is drawn
    gaps = f1_of_counts(counts @ a) - f1_of_counts(counts @ b)
    low, high = torch.quantile(gaps, torch.tensor([0.025, 0.975])).tolist()
    return float(f1_of_counts(a.sum(0)) - f1_of_counts(b.sum(0))), low, high


def auroc_by_column(scores: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Each column of ``scores [n, columns]`` as a detector of ``labels [n]`` (bool): the chance
    that a labelled row outscores an unlabelled one, ties counted half: ``[columns]``."""
    labels = labels.bool()
    pos, neg = scores[labels].double(), scores[~labels].double()
    if len(pos) == 0 or len(neg) == 0:
        raise ValueError("an AUROC needs labelled and unlabelled rows")
    out = torch.zeros(scores.shape[1], dtype=torch.double)
    for p in pos:  # one labelled row at a time: [neg, columns] compared, never [pos, neg, columns]
        out += (p > neg).double().mean(0) + 0.5 * (p == neg).double().mean(0)
    return (out / len(pos)).float()


def best_coordinate(x: torch.Tensor, labels: torch.Tensor) -> tuple[int, float, float, float]:
    """The baseline a latent must beat: the single coordinate of the stream ``x [n, d_model]``,
    read either way up, and the threshold that detect ``labels [n]`` best (F1) on these rows,
    searched exhaustively (every coordinate, both signs, a cut between every two sorted values):
    ``(coordinate, sign, threshold, f1)``; it fires where ``sign * x[:, coordinate] > threshold``."""
    labels = labels.bool()
    signed = torch.cat([x, -x], 1)  # [n, 2 d_model]: each coordinate and its negative
    values, order = signed.sort(0, descending=True)  # firing on the top k rows of a column, for every k
    hits = labels[order].float().cumsum(0)  # [k, column]: labelled rows among the top k
    fired = torch.arange(1, len(x) + 1, dtype=torch.float)[:, None]
    f1 = 2 * hits / (fired + labels.sum())  # [k, column]
    f1[:-1][values[1:] == values[:-1]] = 0  # a cut must fall between two different values
    k, column = divmod(int(f1.argmax()), signed.shape[1])
    cut = float((values[k, column] + values[k + 1, column]) / 2) if k + 1 < len(x) else float(values[k, column]) - 1
    d = x.shape[1]
    return column % d, 1.0 if column < d else -1.0, cut, float(f1[k, column])


def token_rule(train_tokens: torch.Tensor, train_labels: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """The baseline that reads the current token alone: each token id's share of labelled rows
    among ``train_tokens [n]``, fired where that share reaches the cut with the best F1 on the
    training rows; the predictions on ``tokens [m]`` (bool; an id never seen never fires)."""
    vocab = int(max(train_tokens.max(), tokens.max())) + 1
    seen = torch.zeros(vocab).index_add_(0, train_tokens, torch.ones(len(train_tokens)))
    share = torch.zeros(vocab).index_add_(0, train_tokens, train_labels.float()) / seen.clamp(min=1)
    labels = train_labels.bool()

    def f1(cut: float) -> float:
        fire = share[train_tokens] >= cut
        return 2 * (fire & labels).sum().item() / max(1, fire.sum().item() + labels.sum().item())

    cuts = share[(seen > 0) & (share > 0)].unique().tolist()
    best = max(cuts, key=f1) if cuts else float("inf")
    return share[tokens] >= best
