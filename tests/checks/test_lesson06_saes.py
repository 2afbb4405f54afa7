"""Every lesson-06 check accepts a correct solution and rejects the stub and each plausible mistake.

The correct solutions here are written another way than the notebook's (loops, masks, sorting,
explicit counts), so a check that merely compared a function with itself could not pass them
all. The SAE checks run on each model's default zoo SAE.
"""

import pytest
import torch

from utils.checks import lesson06_saes as c
from utils.model_zoo import saes

# --- correct solutions, written another way ---------------------------------------------------


def topk_sae(x, W_enc, b_enc, W_dec, b_dec, k):
    pre = torch.einsum("nd,ds->ns", x - b_dec, W_enc) + b_enc
    kth = pre.sort(dim=-1, descending=True).values[:, k - 1 : k]  # each row's k-th largest
    latents = torch.where(pre >= kth, pre, torch.zeros(())).clamp(min=0)
    return latents, torch.einsum("ns,sd->nd", latents, W_dec) + b_dec


def sparsity(latents):
    n = latents.shape[0]
    per_token = [(row > 0).sum().item() for row in latents]
    per_latent = [(col > 0).sum().item() for col in latents.T]
    return (
        sum(per_token) / n,
        sum(v == 0 for v in per_latent) / len(per_latent),
        sum(v > 0.1 * n for v in per_latent) / len(per_latent),
    )


def explained_variance(x, x_hat):
    centred = x - x.sum(0) / len(x)
    return 1 - float(((x - x_hat) ** 2).sum()) / float((centred**2).sum())


def splice(sae):
    def hook(act, hook):
        return torch.cat([act[:, :1], sae.decode(sae.encode(act[:, 1:]))], dim=1)

    return hook


def batches(acts, batch_size, seed):
    g = torch.Generator()
    g.manual_seed(seed)
    while True:
        perm = torch.randperm(acts.shape[0], generator=g)
        for b in range(acts.shape[0] // batch_size):
            yield acts[perm[b * batch_size : (b + 1) * batch_size]].to(torch.float32)


def top_contexts(values, doc, k):
    best = {}
    for row, (v, d) in enumerate(zip(values.tolist(), doc.tolist())):
        if d not in best or v > values[best[d]].item():
            best[d] = row
    return torch.tensor(sorted(best.values(), key=lambda r: -values[r].item())[:k])


def logit_effects(direction, W_U, k):
    logits = torch.einsum("d,dv->v", direction, W_U)
    order = logits.argsort(descending=True)
    return order[:k], order.flip(0)[:k]


def detector_scores(latents, labels):
    p, r, f = [], [], []
    for col in (latents > 0).T:
        hits = (col & labels).sum().item()
        fired, positives = col.sum().item(), labels.sum().item()
        prec = hits / fired if fired else 0.0
        rec = hits / positives if positives else 0.0
        p.append(prec)
        r.append(rec)
        f.append(2 * prec * rec / (prec + rec) if prec + rec else 0.0)
    return torch.tensor(p), torch.tensor(r), torch.tensor(f)


def strength_sweep(measure, directions, targets, strengths, norm):
    out = {}
    for kind in directions:
        for strength in strengths:
            scaled = torch.nn.functional.normalize(directions[kind], dim=1) * (float(norm) * strength)
            out[(kind, strength)] = measure(torch.stack([scaled[t] for t in targets.tolist()]))
    return out


# --- plausible mistakes ----------------------------------------------------------------------


def _topk(pre, k, by_size=False):
    idx = (pre.abs() if by_size else pre).topk(k, dim=-1).indices
    return torch.zeros_like(pre).scatter(-1, idx, pre.gather(-1, idx))


def _not_centred(x, W_enc, b_enc, W_dec, b_dec, k):
    latents = _topk(x @ W_enc + b_enc, k).relu()
    return latents, latents @ W_dec + b_dec


def _no_relu(x, W_enc, b_enc, W_dec, b_dec, k):
    latents = _topk((x - b_dec) @ W_enc + b_enc, k)
    return latents, latents @ W_dec + b_dec


def _by_size(x, W_enc, b_enc, W_dec, b_dec, k):
    latents = _topk((x - b_dec) @ W_enc + b_enc, k, by_size=True).relu()
    return latents, latents @ W_dec + b_dec


def _relu_only(x, W_enc, b_enc, W_dec, b_dec, k):
    latents = ((x - b_dec) @ W_enc + b_enc).relu()
    return latents, latents @ W_dec + b_dec


def _no_decoder_bias(x, W_enc, b_enc, W_dec, b_dec, k):
    latents, _ = topk_sae(x, W_enc, b_enc, W_dec, b_dec, k)
    return latents, latents @ W_dec


def _no_encoder_bias(x, W_enc, b_enc, W_dec, b_dec, k):
    latents = _topk((x - b_dec) @ W_enc, k).relu()
    return latents, latents @ W_dec + b_dec


def _k_plus_one(x, W_enc, b_enc, W_dec, b_dec, k):
    latents = _topk((x - b_dec) @ W_enc + b_enc, k + 1).relu()
    return latents, latents @ W_dec + b_dec


def _k_minus_one(x, W_enc, b_enc, W_dec, b_dec, k):
    latents = _topk((x - b_dec) @ W_enc + b_enc, k - 1).relu()
    return latents, latents @ W_dec + b_dec


def _over_tokens(x, W_enc, b_enc, W_dec, b_dec, k):
    latents = _topk(((x - b_dec) @ W_enc + b_enc).T, k).T.relu()  # each latent's k largest tokens
    return latents, latents @ W_dec + b_dec


def _median_l0(latents):
    l0, dead, dense = sparsity(latents)
    return (latents > 0).float().sum(-1).median().item(), dead, dense


def _active_above_a_threshold(latents):
    return sparsity(latents * (latents > 0.05))


def _tied(x, W_enc, b_enc, W_dec, b_dec, k):
    latents, _ = topk_sae(x, W_enc, b_enc, W_dec, b_dec, k)
    return latents, latents @ W_enc.T + b_dec


def _rates(latents):
    return (latents > 0).float().mean(0)


def _dead_count(latents):
    l0, dead, dense = sparsity(latents)
    return l0, int((_rates(latents) == 0).sum()), dense


def _dense_count(latents):
    l0, dead, dense = sparsity(latents)
    return l0, dead, int((_rates(latents) > 0.1).sum())


def _percent(latents):
    l0, dead, dense = sparsity(latents)
    return l0, 100 * dead, 100 * dense


def _at_least(latents):
    l0, dead, dense = sparsity(latents)
    return l0, dead, (_rates(latents) >= 0.1).float().mean().item()


def _dense_tokens(latents):
    l0, dead, dense = sparsity(latents)
    return l0, dead, ((latents > 0).float().mean(-1) > 0.1).float().mean().item()


def _nonzero(latents):
    l0, dead, dense = sparsity(latents)
    return (latents != 0).float().sum(-1).mean().item(), dead, dense


def _total(latents):
    l0, dead, dense = sparsity(latents)
    return (latents > 0).float().sum().item(), dead, dense


def _dead_tokens(latents):
    l0, dead, dense = sparsity(latents)
    return l0, (latents > 0).float().mean(-1).eq(0).float().mean().item(), dense


def _dense_half(latents):
    l0, dead, dense = sparsity(latents)
    return l0, dead, (latents > 0).float().mean(0).gt(0.5).float().mean().item()


def _around_origin(x, x_hat):
    return 1 - ((x - x_hat).pow(2).sum() / x.pow(2).sum()).item()


def _per_dimension(x, x_hat):
    return 1 - ((x - x_hat).pow(2).sum(0) / (x - x.mean(0)).pow(2).sum(0)).mean().item()


def _lost(x, x_hat):
    return ((x - x_hat).pow(2).sum() / (x - x.mean(0)).pow(2).sum()).item()


def _per_token(x, x_hat):
    return 1 - ((x - x_hat).pow(2).sum(-1) / (x - x.mean(0)).pow(2).sum(-1)).mean().item()


def _unbiased(x, x_hat):
    return 1 - ((x - x_hat).pow(2).mean(0).sum() / x.var(0).sum()).item()


def _centred_error(x, x_hat):
    e = x - x_hat
    return 1 - ((e - e.mean(0)).pow(2).sum() / (x - x.mean(0)).pow(2).sum()).item()


def _correlation(x, x_hat):
    return torch.corrcoef(torch.stack([x.flatten(), x_hat.flatten()]))[0, 1].item() ** 2


def _bos_zeroed(sae):
    def hook(act, hook):
        out = sae(act)
        out[:, 0] = 0
        return out

    return hook


def _last_kept(sae):
    def hook(act, hook):
        out = sae(act)
        out[:, -1] = act[:, -1]
        return out

    return hook


def _everywhere(sae):
    return lambda act, hook: sae(act)


def _latents(sae):
    return lambda act, hook: sae.encode(act)


def _one_pass(acts, batch_size, seed):
    g = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(acts), generator=g)
    for i in range(0, len(acts) - batch_size + 1, batch_size):
        yield acts[order[i : i + batch_size]].float()


def _same_order(acts, batch_size, seed):
    order = torch.randperm(len(acts), generator=torch.Generator().manual_seed(seed))
    while True:
        for i in range(0, len(acts) - batch_size + 1, batch_size):
            yield acts[order[i : i + batch_size]].float()


def _unshuffled(acts, batch_size, seed):
    while True:
        for i in range(0, len(acts) - batch_size + 1, batch_size):
            yield acts[i : i + batch_size].float()


def _half(acts, batch_size, seed):
    g = torch.Generator().manual_seed(seed)
    while True:
        order = torch.randperm(len(acts), generator=g)
        for i in range(0, len(acts) - batch_size + 1, batch_size):
            yield acts[order[i : i + batch_size]]


def _global(acts, batch_size, seed):
    while True:
        order = torch.randperm(len(acts))
        for i in range(0, len(acts) - batch_size + 1, batch_size):
            yield acts[order[i : i + batch_size]].float()


def _with_replacement(acts, batch_size, seed):
    g = torch.Generator().manual_seed(seed)
    while True:
        yield acts[torch.randint(0, len(acts), (batch_size,), generator=g)].float()


def _same_document(values, doc, k):
    return values.topk(k).indices


def _ascending(values, doc, k):
    return top_contexts(values, doc, k).flip(0)


def _first_row(values, doc, k):
    first = {}
    for row, d in enumerate(doc.tolist()):
        first.setdefault(d, row)
    best = torch.full((int(doc.max()) + 1,), -1.0).scatter_reduce(0, doc, values, "amax")
    return torch.tensor([first[d] for d in best.topk(k).indices.tolist()])


def _by_mean(values, doc, k):
    n = int(doc.max()) + 1
    mean = torch.zeros(n).index_add_(0, doc, values) / torch.bincount(doc, minlength=n)
    rows = []
    for d in mean.topk(k).indices.tolist():
        mine = torch.where(doc == d)[0]
        rows.append(mine[values[mine].argmax()])
    return torch.stack(rows)


def _effects_by_size(direction, W_U, k):
    logits = direction @ W_U
    return logits.abs().topk(k).indices, logits.topk(k, largest=False).indices


def _transposed(direction, W_U, k):
    logits = W_U @ direction
    return logits.topk(k).indices, logits.topk(k, largest=False).indices


def _values(direction, W_U, k):
    logits = direction @ W_U
    return logits.topk(k).values, logits.topk(k, largest=False).values


def _swapped_effects(direction, W_U, k):
    up, down = logit_effects(direction, W_U, k)
    return down, up


def _bottom_reversed(direction, W_U, k):
    up, down = logit_effects(direction, W_U, k)
    return up, down.flip(0)


def _swapped_scores(latents, labels):
    p, r, f = detector_scores(latents, labels)
    return r, p, f


def _nan_when_silent(latents, labels):
    active = (latents > 0).float()
    hits = active[labels].sum(0)
    p = hits / active.sum(0)
    r = hits / labels.sum()
    return p, r, 2 * p * r / (p + r)


def _nonzero_active(latents, labels):
    return detector_scores(latents.abs() + (latents != 0).float(), labels)


def _recall_over_tokens(latents, labels):
    p, r, f = detector_scores(latents, labels)
    r = r * labels.sum() / len(labels)
    return p, r, 2 * p * r / (p + r).clamp(min=1e-12)


def _f1_mean(latents, labels):
    p, r, f = detector_scores(latents, labels)
    return p, r, (p + r) / 2


def _dead_below_a_percent(latents):
    l0, dead, dense = sparsity(latents)
    return l0, (_rates(latents) < 0.01).float().mean().item(), dense


def _dead_below_a_tenth_of_a_percent(latents):
    l0, dead, dense = sparsity(latents)
    return l0, (_rates(latents) < 1e-3).float().mean().item(), dense


def _dead_at_most_one_token(latents):
    l0, dead, dense = sparsity(latents)
    rates = _rates(latents)
    return l0, (rates <= rates[rates > 0].min()).float().mean().item(), dense


def _dense_above_a_shade_more(latents):
    l0, dead, dense = sparsity(latents)
    return l0, dead, (_rates(latents) > 0.104).float().mean().item()


def _dense_at_least_a_shade_less(latents):
    l0, dead, dense = sparsity(latents)
    return l0, dead, (_rates(latents) >= 0.095).float().mean().item()


def _dead_nonzero(latents):
    l0, dead, dense = sparsity(latents)
    return l0, (latents != 0).float().mean(0).eq(0).float().mean().item(), dense


def _batch_order_shuffled(acts, batch_size, seed):
    g = torch.Generator().manual_seed(seed)
    while True:
        for b in torch.randperm(len(acts) // batch_size, generator=g).tolist():
            yield acts[b * batch_size : (b + 1) * batch_size].float()


def _within_batch_shuffled(acts, batch_size, seed):
    g = torch.Generator().manual_seed(seed)
    while True:
        for b in range(len(acts) // batch_size):
            yield acts[b * batch_size : (b + 1) * batch_size][torch.randperm(batch_size, generator=g)].float()


def _same_rows_dropped(acts, batch_size, seed):
    g = torch.Generator().manual_seed(seed)
    n = len(acts) - len(acts) % batch_size
    while True:
        order = torch.randperm(n, generator=g)
        for i in range(0, n, batch_size):
            yield acts[order[i : i + batch_size]].float()


def _half_shuffled(acts, batch_size, seed):
    g = torch.Generator().manual_seed(seed)
    n = len(acts)
    while True:
        order = torch.cat([torch.randperm(n // 2, generator=g), torch.arange(n // 2, n)])
        for i in range(0, n - batch_size + 1, batch_size):
            yield acts[order[i : i + batch_size]].float()


def _halves_shuffled_apart(acts, batch_size, seed):
    g = torch.Generator().manual_seed(seed)
    n = len(acts)
    while True:
        order = torch.cat([torch.randperm(n // 2, generator=g), n // 2 + torch.randperm(n - n // 2, generator=g)])
        for i in range(0, n - batch_size + 1, batch_size):
            yield acts[order[i : i + batch_size]].float()


def _values_not_rows(values, doc, k):
    return values[top_contexts(values, doc, k)]


def _values_and_rows(values, doc, k):
    rows = top_contexts(values, doc, k)
    return values[rows], rows


def _document_ids(values, doc, k):
    return doc[top_contexts(values, doc, k)]


def _error_added_back(sae):
    def hook(act, hook):
        recon = sae(act)
        out = recon + (act - recon)
        out[:, 0] = act[:, 0]
        return out

    return hook


def _error_only(sae):
    def hook(act, hook):
        out = act - sae(act)
        out[:, 0] = act[:, 0]
        return out

    return hook


def _bos_dropped(sae):
    return lambda act, hook: sae(act[:, 1:])


def _flattened(sae):
    def hook(act, hook):
        out = sae(act)
        out[:, 0] = act[:, 0]
        return out.reshape(-1, act.shape[-1])

    return hook


def _named_pair_elsewhere(sae):
    return ("blocks.2.hook_resid_post", splice(sae))


def _named_pair(sae):
    return (sae.cfg.metadata.hook_name, splice(sae))


def _nothing_returned(sae):
    def hook(act, hook):
        out = sae(act)
        out[:, 0] = act[:, 0]

    return hook


def _second_kept(sae):
    def hook(act, hook):
        out = sae(act)
        out[:, 1] = act[:, 1]
        return out

    return hook


def _another_hook_point(sae):
    inner = splice(sae)
    return lambda act, hook: inner(act, hook) if hook.name == "blocks.2.hook_resid_post" else act


def _sweep(vectors_of):
    """A strength sweep whose vectors for (rows, strength, norm, targets) come from ``vectors_of``."""

    def sweep(measure, directions, targets, strengths, norm):
        return {
            (kind, strength): measure(vectors_of(rows, strength, norm, targets))
            for kind, rows in directions.items()
            for strength in strengths
        }

    return sweep


_unnormalised = _sweep(lambda rows, strength, norm, targets: (rows * strength * norm)[targets])
_normalised_over_emotions = _sweep(
    lambda rows, strength, norm, targets: (rows / rows.norm(dim=0) * strength * norm)[targets]
)
_whole_matrix_norm = _sweep(lambda rows, strength, norm, targets: (rows / rows.norm() * strength * norm)[targets])
_norm_forgotten = _sweep(
    lambda rows, strength, norm, targets: (rows / rows.norm(dim=-1, keepdim=True) * strength)[targets]
)
_strength_forgotten = _sweep(
    lambda rows, strength, norm, targets: (rows / rows.norm(dim=-1, keepdim=True) * norm)[targets]
)
_one_row_per_emotion = _sweep(
    lambda rows, strength, norm, targets: rows / rows.norm(dim=-1, keepdim=True) * strength * norm
)
_emotion_by_position = _sweep(
    lambda rows, strength, norm, targets: (rows / rows.norm(dim=-1, keepdim=True) * strength * norm)[
        torch.arange(len(targets)) % len(rows)
    ]
)


def _first_strength_skipped(measure, directions, targets, strengths, norm):
    return strength_sweep(measure, directions, targets, strengths[1:], norm)


def _last_strength_skipped(measure, directions, targets, strengths, norm):
    return {k: v for k, v in strength_sweep(measure, directions, targets, strengths[:-1], norm).items()}


def _keyed_by_position(measure, directions, targets, strengths, norm):
    out = strength_sweep(measure, directions, targets, strengths, norm)
    return {(kind, strengths.index(strength)): v for (kind, strength), v in out.items()}


def _keys_swapped(measure, directions, targets, strengths, norm):
    return {
        (strength, kind): v
        for (kind, strength), v in strength_sweep(measure, directions, targets, strengths, norm).items()
    }


def _keyed_by_kind(measure, directions, targets, strengths, norm):
    return {kind: v for (kind, strength), v in strength_sweep(measure, directions, targets, strengths, norm).items()}


def _rescaled_in_place(measure, directions, targets, strengths, norm):
    for rows in directions.values():
        rows /= rows.norm(dim=-1, keepdim=True)
    return {
        (kind, strength): measure((rows * strength * norm)[targets])
        for kind, rows in directions.items()
        for strength in strengths
    }


def _measured_twice(measure, directions, targets, strengths, norm):
    out = {}
    for kind, rows in directions.items():
        unit = rows / rows.norm(dim=-1, keepdim=True)
        for strength in strengths:
            out[kind, strength] = (
                measure((unit * strength * norm)[targets])[0],
                measure((unit * strength * norm)[targets])[1],
            )
    return out


def _first_part_stored(measure, directions, targets, strengths, norm):
    return {k: v[0] for k, v in strength_sweep(measure, directions, targets, strengths, norm).items()}


def _stale_unit(measure, directions, targets, strengths, norm):
    units = [rows / rows.norm(dim=-1, keepdim=True) for rows in directions.values()]
    return {
        (kind, strength): measure((units[0] * strength * norm)[targets])
        for kind in directions
        for strength in strengths
    }


CASES = {
    "sparsity": (
        c.check_sparsity,
        sparsity,
        {
            "negatives included": _nonzero,
            "total over all tokens": _total,
            "dead latent": _dead_tokens,
            "wrong threshold": _dense_half,
            "dead is a count of latents": _dead_count,
            "dense is a count of latents": _dense_count,
            "dead is a percentage": _percent,
            "strictly more than 10%": _at_least,
            "dense is a property of a latent": _dense_tokens,
            "active on up to 5 of the 2000 tokens as dead": _dead_below_a_percent,
            "counts a latent that fired once as dead": _dead_at_most_one_token,
            "a latent that fired once is not dead: dead means never active": _dead_below_a_tenth_of_a_percent,
            "a threshold off 10%": _dense_above_a_shade_more,
            "active on 199 or more of the 2000 tokens as dense": _dense_at_least_a_shade_less,
            "negative values are not active either": _dead_nonzero,
            "is the median over tokens": _median_l0,
            "active only above 0.05": _active_above_a_threshold,
        },
    ),  # fmt: skip
    "explained_variance": (
        c.check_explained_variance,
        explained_variance,
        {
            "around the origin": _around_origin,
            "per dimension": _per_dimension,
            "subtract it from 1": _lost,
            "explained_variance_legacy": _per_token,
            "unbiased variance": _unbiased,
            "centres the error on its own mean": _centred_error,
            "squared correlation": _correlation,
        },
    ),
    "batches": (
        c.check_batches,
        batches,
        {
            "go on forever": _one_pass,
            "same order": _same_order,
            "does not shuffle": _unshuffled,
            "float32": _half,
            "not reproducible": _global,
            "repeats rows": _with_replacement,
            "shuffling the order of whole batches": _batch_order_shuffled,
            "runs of neighbouring rows": _within_batch_shuffled,
            "never appear in five passes": _same_rows_dropped,
            "only partly shuffles the rows": _half_shuffled,
            "the order follows the stored one": _halves_shuffled_apart,
        },
    ),  # fmt: skip
    "top_contexts": (
        c.check_top_contexts,
        top_contexts,
        {
            "same document": _same_document,
            "wrong order": _ascending,
            "not each one's strongest row": _first_row,
            "by their mean value": _by_mean,
            "the activations at those rows, not row indices": _values_not_rows,
            "returned a pair": _values_and_rows,
            "documents' ids": _document_ids,
        },
    ),
    "detector_scores": (
        c.check_detector_scores,
        detector_scores,
        {
            "are swapped": _swapped_scores,
            "has NaN": _nan_when_silent,
            "counts negative values as firing": _nonzero_active,
            "recall divides the hits by every token": _recall_over_tokens,
            "harmonic mean": _f1_mean,
        },
    ),
    "strength_sweep": (
        c.check_strength_sweep,
        strength_sweep,
        {
            "each row keeps its own length": _unnormalised,
            "norm over dim=0, the wrong axis": _normalised_over_emotions,
            "the norm of the whole matrix": _whole_matrix_norm,
            "the vectors have length c, not c × norm": _norm_forgotten,
            "length norm at every strength": _strength_forgotten,
            "one vector per emotion": _one_row_per_emotion,
            "got emotion i mod 4's row, not its target's": _emotion_by_position,
            "skips the strength(s) [0.25]": _first_strength_skipped,
            "skips the strength(s) [1.0]": _last_strength_skipped,
            "the strength's position in the list": _keyed_by_position,
            "keys are (strength, kind)": _keys_swapped,
            "each value overwrote the one before": _keyed_by_kind,
            "changed the directions it was given in place": _rescaled_in_place,
            "called measure 12 times for 6 settings": _measured_twice,
            "stored Tensor under": _first_part_stored,
            "are those of ('first'": _stale_unit,
        },
    ),
}

SAE_CASES = {
    "topk_sae": (
        c.check_topk_sae,
        topk_sae,
        {
            "subtract the decoder bias": _not_centred,
            "apply a ReLU": _no_relu,
            "by size": _by_size,
            "every positive latent": _relu_only,
            "missing the decoder bias": _no_decoder_bias,
            "encoder bias b_enc is missing": _no_encoder_bias,
            "you keep k + 1": _k_plus_one,
            "you keep k - 1": _k_minus_one,
            "tied decoder": _tied,
            "top k over the tokens": _over_tokens,
        },
    ),  # fmt: skip
    "splice": (
        c.check_splice,
        splice,
        {
            "position 0 (BOS) was replaced": _everywhere,
            "returned the latents": _latents,
            "position 0 (BOS) was zeroed": _bos_zeroed,
            "the last position was kept": _last_kept,
            "error term back": _error_added_back,
            "returns the SAE's error term": _error_only,
            "dropped position 0": _bos_dropped,
            "positions flattened": _flattened,
            "the wrong hook point": _named_pair_elsewhere,
            "Return the hook function alone": _named_pair,
            "returned None and left the stream": _nothing_returned,
            "position 1 was kept": _second_kept,
            "stream unchanged at the SAE's hook point": _another_hook_point,
        },
    ),
}


@pytest.fixture(scope="module", params=["storyworld-4l", "storyworld-llama"])
def model_and_sae(request):
    from utils import load_model

    with torch.no_grad():
        yield load_model(request.param, device="cpu"), saes.load_sae(saes.DEFAULT_SAES[request.param], "cpu")


@pytest.mark.parametrize("exercise", sorted(CASES))
def test_check_accepts_a_correct_solution_and_rejects_the_stub_and_each_mistake(exercise, prove_check):
    check, solution, wrong = CASES[exercise]
    with torch.no_grad():
        prove_check(check, solution, wrong)


@pytest.mark.parametrize("exercise", sorted(SAE_CASES))
def test_sae_check_accepts_a_correct_solution_and_rejects_the_stub_and_mistakes(exercise, model_and_sae, prove_check):
    check, solution, wrong = SAE_CASES[exercise]
    with torch.no_grad():
        prove_check(check, solution, wrong, model_and_sae[1])


def test_logit_effects_check_accepts_a_correct_solution_and_rejects_the_stub_and_mistakes(model_and_sae, prove_check):
    model, sae = model_and_sae
    wrong = {
        "swapped the two lists": _swapped_effects,
        "most negative first": _bottom_reversed,
        "size of their effect (abs)": _effects_by_size,
        "W_U is [d_model, d_vocab]": _transposed,
        "return the token ids": _values,
    }
    with torch.no_grad():
        prove_check(c.check_logit_effects, logit_effects, wrong, model, sae)
