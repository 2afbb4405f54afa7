"""Checks for lesson 06, sparse autoencoders: ``check_<exercise>(your_function, ...)``.

Each check runs the learner's function on fresh inputs (small synthetic problems whose answer is
known, or activations of the model itself) and compares with SAELens (the SAE's own ``encode``
and ``decode``) or with the references in ``utils.metrics.saes``.
"""

from __future__ import annotations

from collections.abc import Callable
from itertools import islice

import torch

from utils.checks.framework import CheckFailed, as_number, call, expect_close, expect_tensor, passed
from utils.metrics import saes as ref


def _name(fn: Callable, default: str) -> str:
    return getattr(fn, "__name__", default)


def _keep_top(pre: torch.Tensor, k: int) -> torch.Tensor:
    """Each row's ``k`` largest entries in place, every other entry 0."""
    idx = pre.topk(k, dim=-1).indices
    return torch.zeros_like(pre).scatter(-1, idx, pre.gather(-1, idx))


def _activations_like(sae, n: int, seed: int) -> torch.Tensor:
    """``[n, d_in]`` inputs the SAE has plenty to say about: sums of a dozen decoder rows plus noise;
    in every fourth row the rows are subtracted, so that few pre-activations are positive there."""
    g = torch.Generator().manual_seed(seed)
    W_dec = sae.W_dec.detach().float().cpu()
    mix = torch.zeros(n, W_dec.shape[0])
    for row in range(n):
        picks = torch.randperm(W_dec.shape[0], generator=g)[:12]
        mix[row, picks] = torch.rand(12, generator=g) * 20 * (-1 if row % 4 == 3 else 1)
    return mix @ W_dec + sae.b_dec.detach().float().cpu() + torch.randn(n, W_dec.shape[1], generator=g)


# --- the forward pass --------------------------------------------------------------------------


def check_topk_sae(fn: Callable, sae) -> None:
    """fn(x [n, d_in], W_enc, b_enc, W_dec, b_dec, k) -> (latents [n, d_sae], reconstruction [n, d_in])."""
    import copy

    name = _name(fn, "topk_sae")
    x = _activations_like(sae, 64, 61)
    k = sae.cfg.k
    sae = copy.deepcopy(sae).to("cpu")  # a copy (SAELens's .to, which moves its device too); the lesson's stays
    with torch.no_grad():
        pre = (x - sae.b_dec) @ sae.W_enc + sae.b_enc
        # A second SAE whose encoder bias is lowered so that many rows have fewer than k positive
        # pre-activations: there the ReLU decides what survives.
        low = copy.deepcopy(sae)
        low.b_enc -= pre.topk(k // 2, dim=-1).values[:, -1].median()
    for case, s in (("the SAE", sae), ("the SAE with a lowered encoder bias", low)):
        W_enc, b_enc = s.W_enc.detach().clone(), s.b_enc.detach().clone()
        W_dec, b_dec = s.W_dec.detach().clone(), s.b_dec.detach().clone()
        out = call(fn, x, W_enc, b_enc, W_dec, b_dec, k, name=name)
        if not isinstance(out, tuple) or len(out) != 2:
            raise CheckFailed(
                f"`{name}` should return two tensors, (latents, reconstruction), not {type(out).__name__}."
            )
        latents = expect_tensor(out[0], (64, W_enc.shape[1]), ["token", "d_sae"], f"{name}'s latents")
        recon = expect_tensor(out[1], tuple(x.shape), ["token", "d_in"], f"{name}'s reconstruction")
        with torch.no_grad():
            want = s.encode(x)
            want_recon = s.decode(want)
            pre = (x - b_dec) @ W_enc + b_enc
            no_centre = x @ W_enc + b_enc

        def topk(p, by_size=False):
            idx = (p.abs() if by_size else p).topk(k, dim=-1).indices
            return torch.zeros_like(p).scatter(-1, idx, p.gather(-1, idx))

        hints = [
            (topk(no_centre).relu(), "the latents differ from SAELens's: subtract the decoder bias b_dec from x "
             "before encoding (SAELens centres the input on b_dec)."),
            (topk(pre), "negative values survive among the top k: apply a ReLU to the k kept values."),
            (topk(pre, by_size=True).relu(), "you kept the k largest values by size (abs): keep the k largest "
             "pre-activations themselves."),
            (pre.relu(), f"every positive latent is kept: keep only the k = {k} largest pre-activations of a token."),
            (topk(pre - b_enc).relu(), "the encoder bias b_enc is missing: pre = (x - b_dec) @ W_enc + b_enc."),
            (_keep_top(pre, k + 1).relu(), f"you keep k + 1 = {k + 1} latents per token (an off-by-one in the "
             f"top-k): keep exactly k = {k}."),
            (_keep_top(pre, k - 1).relu(), f"you keep k - 1 = {k - 1} latents per token (an off-by-one in the "
             f"top-k): keep exactly k = {k}."),
            (_keep_top(pre.T, k).T.relu(), "you took the top k over the tokens (dim=0), each latent's k largest "
             "tokens: take it over the latents of each token, topk(k, dim=-1)."),
        ]  # fmt: skip
        expect_close(latents, want, name, f"latents ({case})", atol=1e-3, hints=hints)
        hints = [
            (latents @ W_dec, "the reconstruction is missing the decoder bias b_dec."),
            (latents @ W_enc.T + b_dec, "the reconstruction uses W_enc.T, a tied decoder: decode with the SAE's own "
             "decoder, latents @ W_dec + b_dec (SAELens's SAEs train W_dec apart from W_enc)."),
        ]  # fmt: skip
        expect_close(recon, want_recon, name, f"reconstruction ({case})", atol=1e-3, hints=hints)
    passed(name, f"same latents and reconstruction as SAELens's encode and decode (k = {k})")


# --- metrics ------------------------------------------------------------------------------------


def _sparsity_latents() -> torch.Tensor:
    """``[2000, 50]`` latents whose firing counts sit at the edges of both definitions: seven latents
    active on no token (dead), one on a single token (alive, a rate of 0.05%: below any small
    threshold such as rate < 1e-3), others on 199, 200 and 201 tokens of 2000 (just under, exactly at
    and just over 10%: only 201 is dense), the rest spread up to 30%."""
    g = torch.Generator().manual_seed(62)
    n = 2000
    counts = [0] * 7 + [1, 2, 3, 199, 200, 201] + torch.linspace(5, 600, 37).round().long().tolist()
    fire = torch.zeros(n, len(counts), dtype=torch.bool)
    for j, count in enumerate(counts):
        fire[torch.randperm(n, generator=g)[:count], j] = True
    latents = torch.zeros(n, len(counts))
    latents[fire] = torch.rand(int(fire.sum()), generator=g) + 0.001  # some active values are small
    latents[~fire] = -torch.rand(int((~fire).sum()), generator=g)  # pre-activation-like negatives: not active
    return latents


def _threshold_slip(value: float, rate: torch.Tensor, n_tokens: int, dead: bool) -> str | None:
    """If ``value`` is the dead (or dense) share for a threshold other than the right one, say which."""
    for t in sorted(set(rate.tolist())):
        if dead and t > 0 and abs(value - (rate <= t).float().mean().item()) <= 1e-6:
            return (f"counts latents active on up to {round(t * n_tokens)} of the {n_tokens} tokens as dead (a "
                    "threshold on the rate, such as rate < 0.01): dead means active on no token at all, "
                    "rate == 0.")  # fmt: skip
        if not dead:
            for share in (rate > t, rate >= t):
                if abs(value - share.float().mean().item()) <= 1e-6:
                    fewest = round(rate[share].min().item() * n_tokens)
                    return (f"counts latents active on {fewest} or more of the {n_tokens} tokens as dense, a "
                            f"threshold off 10%: dense means active on strictly more than 10% of the tokens, "
                            f"rate > 0.1 ({n_tokens // 10 + 1} or more of {n_tokens} here).")  # fmt: skip
    return None


def check_sparsity(fn: Callable) -> None:
    """fn(latents [n, d_sae]) -> (l0, dead share, dense share), dense meaning active on > 10% of tokens."""
    name = _name(fn, "sparsity")
    latents = _sparsity_latents()
    out = call(fn, latents, name=name)
    if not isinstance(out, tuple) or len(out) != 3:
        raise CheckFailed(f"`{name}` should return three numbers (l0, dead, dense), not {type(out).__name__}.")
    got = [as_number(v) for v in out]
    want = [ref.l0(latents), *ref.dead_and_dense(latents)]
    active = latents != 0
    rate = (latents > 0).float().mean(0)
    counts = "is a count of latents: return the share of the d_sae latents (divide by the number of latents)."
    percent = "is a percentage: return a share between 0 and 1."
    wrong = {
        "l0": [
            (active.float().sum(-1).mean().item(), "counts non-zero entries, negatives included: a latent is "
             "active when it is above zero."),
            ((latents > 0).float().sum().item(), "is the total over all tokens: take the mean per token."),
            ((latents > 0).float().mean().item(), "is the share of active entries: count the active latents per "
             "token, then average over tokens."),
            ((latents > 0).float().sum(-1).median().item(), "is the median over tokens: L0 is the mean number of "
             "active latents per token, .mean()."),
            *[((latents > t).float().sum(-1).mean().item(), f"counts a latent as active only above {t}: active "
               "means above 0, latents > 0.") for t in (0.01, 0.05, 0.1, 0.5)],
        ],
        "dead": [
            ((latents > 0).float().mean(-1).eq(0).float().mean().item(), "counts tokens with no active latent: a "
             "dead latent is one that is active on no token."),
            ((latents != 0).float().mean(0).eq(0).float().mean().item(), "counts only latents that are exactly 0 "
             "everywhere: negative values are not active either, so a dead latent is one never above 0."),
            (rate.le(1 / len(latents)).float().mean().item(), "counts a latent that fired once as dead (a "
             "threshold on the rate, such as rate < 1e-3): a latent that fired once is not dead: dead means "
             "never active, rate == 0."),
            (rate.eq(0).float().sum().item(), counts),
            (100 * rate.eq(0).float().mean().item(), percent),
        ],
        "dense": [
            (rate.gt(0.5).float().mean().item(), "uses the wrong threshold: dense means active on more than 10% "
             "of the tokens."),
            (rate.ge(0.1).float().mean().item(), "counts a latent active on exactly 10% of the tokens as dense "
             "(>= 0.1): dense means strictly more than 10% (> 0.1)."),
            ((latents > 0).float().mean(-1).gt(0.1).float().mean().item(), "is a share of tokens (those with more "
             "than 10% of the latents active): dense is a property of a latent, active on more than 10% of the "
             "tokens, so take each latent's rate over tokens, .mean(0)."),
            (rate.gt(0.1).float().sum().item(), counts),
            (100 * rate.gt(0.1).float().mean().item(), percent),
        ],
    }  # fmt: skip
    for what, value, expected in zip(("l0", "dead", "dense"), got, want):
        if abs(value - expected) <= 1e-6:
            continue
        for wrong_value, message in wrong[what]:
            if abs(value - wrong_value) <= 1e-6:
                raise CheckFailed(f"`{name}`'s {what} {message}")
        slip = _threshold_slip(value, rate, len(latents), dead=what == "dead") if what != "l0" else None
        if slip:
            raise CheckFailed(f"`{name}`'s {what} {slip}")
        raise CheckFailed(f"`{name}` gives {what} = {value:.4g}; expected {expected:.4g}.")
    passed(name, "L0, dead and dense shares as SAELens users define them")


def check_explained_variance(fn: Callable) -> None:
    """fn(x [n, d], x_hat [n, d]) -> 1 - Σ‖x - x̂‖² / Σ‖x - x̄‖²."""
    name = _name(fn, "explained_variance")
    g = torch.Generator().manual_seed(63)
    x = torch.randn(300, 16, generator=g) * torch.linspace(0.2, 3, 16) + 5  # uneven dims, far from the origin
    x_hat = x + torch.randn(300, 16, generator=g) * 0.8 + 0.3  # an error with an offset, as a biased SAE makes
    out = as_number(call(fn, x, x_hat, name=name))
    want = ref.explained_variance(x, x_hat)
    err = (x - x_hat).pow(2).sum()
    centred = (x - x.mean(0)).pow(2)
    per_dim = 1 - ((x - x_hat).pow(2).sum(0) / centred.sum(0)).mean().item()
    per_token = 1 - ((x - x_hat).pow(2).sum(-1) / centred.sum(-1)).mean().item()
    residual = x - x_hat
    flat = torch.stack([x.flatten(), x_hat.flatten()])
    r2_dims = torch.stack([torch.corrcoef(torch.stack([x[:, d], x_hat[:, d]]))[0, 1] ** 2 for d in range(16)])
    wrong = [
        (per_token, "averages a ratio per token, 1 - mean(‖x - x̂‖² / ‖x - x̄‖²) (SAELens logs this as "
         "explained_variance_legacy): a token near the mean gets a huge ratio. Sum the errors and the variances "
         "over every token first, then divide once."),
        (1 - (x - x_hat).pow(2).mean(0).sum().item() / x.var(0).sum().item(), "divides an error averaged over n "
         "by x.var(0), which divides by n - 1 (the unbiased variance): use x.var(0, unbiased=False), or sums on "
         "both sides."),
        (1 - ((residual - residual.mean(0)).pow(2).sum() / centred.sum()).item(), "centres the error on its own "
         "mean, 1 - Var(x - x̂) / Var(x) (scikit-learn's explained_variance_score): that forgives a constant offset "
         "in the reconstruction. Use the raw squared error Σ‖x - x̂‖²."),
        (torch.corrcoef(flat)[0, 1].pow(2).item(), "is a squared correlation: it ignores the reconstruction's scale "
         "and offset. Compute 1 - Σ‖x - x̂‖² / Σ‖x - x̄‖²."),
        (r2_dims.mean().item(), "averages a squared correlation per dimension: it ignores the reconstruction's "
         "scale and offset. Compute 1 - Σ‖x - x̂‖² / Σ‖x - x̄‖²."),
        (1 - (err / x.pow(2).sum()).item(), "divides by Σ‖x‖² around the origin: measure the variance around the "
         "mean, Σ‖x - x̄‖²."),
        (per_dim, "averages a ratio per dimension: sum the squared errors and the variances over every "
         "dimension first, then divide once."),
        ((err / (x - x.mean(0)).pow(2).sum()).item(), "is the share of the variance lost: subtract it from 1."),
        (1 - (err / (x - x.mean()).pow(2).sum()).item(), "centres on one overall mean, x.mean(): subtract each "
         "dimension's own mean, x.mean(0)."),
    ]  # fmt: skip
    if abs(out - want) > 1e-4:
        for value, message in wrong:
            if abs(out - value) <= 1e-4:
                raise CheckFailed(f"`{name}` {message}")
        raise CheckFailed(f"`{name}` gives {out:.4g}; expected {want:.4g}.")
    passed(name, "one minus the squared error over the variance around the mean, over every dimension")


class _HookPoint:
    """What TransformerLens passes a hook as its second argument, as far as a splice may read it."""

    def __init__(self, name: str):
        self.name = name


def check_splice(fn: Callable, sae) -> None:
    """fn(sae) -> hook(act [batch, pos, d_in], hook) returning the SAE's reconstruction, BOS kept."""
    name = _name(fn, "splice")
    point = sae.cfg.metadata.hook_name
    hook = call(fn, sae, name=name)
    if isinstance(hook, (tuple, list)):
        names = [h for h in hook if isinstance(h, str)]
        where = (f" It names {names[0]!r}, the wrong hook point: this SAE reads {point!r}." if names and
                 names[0] != point else "")  # fmt: skip
        raise CheckFailed(f"`{name}` returned a {type(hook).__name__}, not a hook function.{where} Return the hook "
                          "function alone; the lesson's cell pairs it with HOOK, the SAE's own hook point "
                          "(sae.cfg.metadata.hook_name).")  # fmt: skip
    if not callable(hook):
        raise CheckFailed(f"`{name}` should return a hook function (act, hook) -> act, not {type(hook).__name__}.")
    act = _activations_like(sae, 15, 64).reshape(3, 5, -1).to(sae.W_dec.device)
    given = act.clone()
    out = call(hook, given, _HookPoint(point), name="your hook", in_place_ok=True)
    if out is None and torch.equal(given, act):
        raise CheckFailed("your hook returned None and left the stream as it was: return the new activation (or "
                          "edit act in place); the model uses what the hook returns.")  # fmt: skip
    out = given if out is None else out
    if isinstance(out, tuple):
        raise CheckFailed(f"your hook returned a tuple of {len(out)}: return one tensor, the reconstruction "
                          "[batch, pos, d_in] (sae(act), or sae.decode(sae.encode(act))).")  # fmt: skip
    if isinstance(out, torch.Tensor):
        d_in, d_sae = sae.cfg.d_in, sae.cfg.d_sae
        if out.shape[-1] == d_sae != d_in:
            raise CheckFailed("your hook returned the latents: the model needs the reconstruction, "
                              "sae.decode(latents).")  # fmt: skip
        if tuple(out.shape) == (act.shape[0], act.shape[1] - 1, d_in):
            raise CheckFailed(f"your hook returned shape {tuple(out.shape)} for a stream of {tuple(act.shape)}: it "
                              "dropped position 0. The hook must return every position: the reconstruction, with "
                              "position 0 copied from act.")  # fmt: skip
        if out.ndim == 2 and out.shape[0] == act.shape[0] * act.shape[1]:
            raise CheckFailed(f"your hook returned shape {tuple(out.shape)}, the positions flattened: reshape the "
                              f"result back to the stream's shape {tuple(act.shape)} [batch, pos, d_in].")  # fmt: skip
    out = expect_tensor(out, act.shape, ["batch", "position", "d_in"], "your hook")
    with torch.no_grad():
        recon = sae(act.clone())
        want = recon.clone()
        want[:, 0] = act[:, 0]
        zeroed = want.clone()
        zeroed[:, 0] = 0
        last = recon.clone()
        last[:, -1] = act[:, -1]
        second = recon.clone()
        second[:, 1] = act[:, 1]
        error = act - recon
        error_kept = error.clone()
        error_kept[:, 0] = act[:, 0]
    if torch.allclose(out.detach().float().cpu(), act.float().cpu(), atol=1e-4):
        raise CheckFailed(f"your hook returned the stream unchanged at the SAE's hook point ({point}): nothing is "
                          "replaced. Adding the SAE's error term back (x̂ + (x - x̂), or SAELens's "
                          "use_error_term = True) gives back the model's own activation; return the reconstruction "
                          "alone. (A test on hook.name that skips this hook point does the same.)")  # fmt: skip
    hints = [
        (recon, "position 0 (BOS) was replaced too: keep it as it is; no SAE in the zoo was trained on it."),
        (zeroed, "position 0 (BOS) was zeroed: keep the model's own activation there, out[:, 0] = act[:, 0]."),
        (last, "the last position was kept and BOS replaced: BOS is position 0, out[:, 0] = act[:, 0]."),
        (second, "position 1 was kept and BOS replaced: BOS is position 0, out[:, 0] = act[:, 0]."),
        (error, "your hook returns the SAE's error term, act - sae(act): return the reconstruction sae(act)."),
        (error_kept, "your hook returns the SAE's error term, act - sae(act), at positions after BOS: return the "
         "reconstruction sae(act)."),
    ]  # fmt: skip
    expect_close(out, want, "your hook", "activation", atol=1e-3, hints=hints)
    passed(name, "the reconstruction at every position but BOS")


# --- training -------------------------------------------------------------------------------------


def check_batches(fn: Callable) -> None:
    """fn(acts [n, d], batch_size, seed) -> an endless iterator of float32 [batch_size, d] batches,
    each pass a new seeded permutation of the rows (a last partial batch dropped)."""
    name = _name(fn, "batches")
    acts = torch.arange(50, dtype=torch.float16)[:, None].repeat(1, 3)  # row i holds i
    it = call(fn, acts, 8, 0, name=name)
    if not hasattr(it, "__next__"):
        raise CheckFailed(f"`{name}` should return an iterator (write it as a generator with `yield`), "
                          f"not {type(it).__name__}.")  # fmt: skip
    try:
        got = list(islice(it, 30))  # five passes of six batches
    except Exception as e:
        raise CheckFailed(f"iterating `{name}` raised {type(e).__name__}: {e}") from None
    if len(got) < 30:
        raise CheckFailed(f"`{name}` stopped after {len(got)} batches: SAELens's trainer draws batches until its token "
                          "budget is spent, so the iterator must go on forever (loop over new passes).")  # fmt: skip
    for b in got:
        expect_tensor(b, (8, 3), ["batch", "d_in"], f"a batch from {name}")
        if b.dtype != torch.float32:
            raise CheckFailed(f"`{name}` yields {b.dtype}: give the trainer float32 (the cache holds float16).")
    passes = [torch.cat([b[:, 0] for b in got[6 * p : 6 * p + 6]]).long() for p in range(5)]
    for p, rows in enumerate(passes):
        if len(set(rows.tolist())) != 48:
            raise CheckFailed(f"pass {p + 1} of `{name}` repeats rows: each pass should visit every row at most once "
                              "(a permutation of all 50 rows, cut into six batches of 8, the last 2 rows dropped). "
                              "If yours permutes only some of the rows, each pass is shorter than that.")  # fmt: skip
    if torch.equal(passes[0], torch.arange(48)):
        raise CheckFailed(f"`{name}` does not shuffle: the rows come in their stored order.")
    runs = sum(bool((b[:, 0].sort().values.long().diff() == 1).all()) for b in got)
    if runs >= len(got) // 2:
        raise CheckFailed(f"{runs} of the first {len(got)} batches from `{name}` are runs of neighbouring rows (i to "
                          "i + 7): shuffling the order of whole batches, or the rows within a batch, keeps rows "
                          "that sit together (one document's tokens) in the same batch. Permute the rows "
                          "themselves, torch.randperm(len(acts)), then cut the permutation into batches.")  # fmt: skip
    in_place = max(int((rows == torch.arange(48)).sum()) for rows in passes)
    position = torch.arange(48.0).repeat(len(passes))
    follows = torch.corrcoef(torch.stack([torch.cat(passes).float(), position]))[0, 1].item()
    if in_place >= 12 or follows > 0.4:  # a full permutation: about 1 row in place, a correlation near 0
        raise CheckFailed(f"`{name}` only partly shuffles the rows (up to {in_place} of a pass's 48 rows stay at "
                          f"their stored place; over five passes the order follows the stored one with "
                          f"correlation {follows:.2f}): permute all the rows at once, "
                          "torch.randperm(len(acts)).")  # fmt: skip
    if torch.equal(passes[0], passes[1]):
        raise CheckFailed(f"every pass of `{name}` has the same order: draw a new permutation for each pass.")
    never = sorted(set(range(50)) - set(torch.cat(passes).tolist()))
    if never:
        raise CheckFailed(f"rows {never} never appear in five passes of `{name}`: each pass should permute all the "
                          "rows, torch.randperm(len(acts)), and drop the last partial batch of that permutation, "
                          "which holds other rows each pass (not the same last rows every time).")  # fmt: skip
    again = [b[:, 0] for b in islice(call(fn, acts, 8, 0, name=name), 6)]
    other = [b[:, 0] for b in islice(call(fn, acts, 8, 1, name=name), 6)]
    if not torch.equal(torch.cat(again).long(), passes[0]):
        raise CheckFailed(f"`{name}` is not reproducible: the same seed gave another order. Draw the permutations "
                          "from a torch.Generator seeded with `seed`.")  # fmt: skip
    if torch.equal(torch.cat(other).long(), passes[0]):
        raise CheckFailed(f"`{name}` ignores its seed: seeds 0 and 1 gave the same order.")
    passed(name, "endless, float32, a new seeded permutation each pass")


# --- reading latents ------------------------------------------------------------------------------


def check_top_contexts(fn: Callable) -> None:
    """fn(values [row], doc [row], k) -> indices [k] of the k largest values, at most one per document,
    largest first."""
    name = _name(fn, "top_contexts")
    g = torch.Generator().manual_seed(65)
    doc = torch.arange(30).repeat_interleave(10)
    values = torch.rand(300, generator=g)
    values[doc == 4] += 2  # one document holds the ten largest values
    out = call(fn, values, doc, 5, name=name)
    if isinstance(out, tuple) and len(out) == 2:
        raise CheckFailed(f"`{name}` returned a pair (values and indices, as .topk gives): return only the rows' "
                          "indices, one tensor [k].")  # fmt: skip
    try:
        out = torch.as_tensor(out)
    except (TypeError, ValueError, RuntimeError):
        raise CheckFailed(f"`{name}` should return a tensor of k row indices, not {type(out).__name__}.") from None
    out = expect_tensor(out, (5,), ["k"], name, floating=False)
    best = torch.full((30,), -1.0).scatter_reduce(0, doc, values, "amax")
    want_docs = best.topk(5).indices
    want = torch.stack([torch.where((doc == d) & (values == best[d]))[0][0] for d in want_docs])
    if out.is_floating_point():
        what = "the activations at those rows" if torch.allclose(out, values[want]) else "floating-point numbers"
        raise CheckFailed(f"`{name}` returned {what}, not row indices: return the indices of the rows (from "
                          "argsort or .topk(...).indices), which the dashboard uses to find each context.")  # fmt: skip
    if out.dtype == torch.bool:
        raise CheckFailed(f"`{name}` returned a boolean mask: return the k row indices, largest value first.")
    if ((out < 0) | (out >= len(values))).any():
        raise CheckFailed(f"`{name}` returned {out.tolist()}, outside the {len(values)} rows: return indices into "
                          "values (0 to len(values) - 1).")  # fmt: skip
    if torch.equal(out, want_docs):
        raise CheckFailed(f"`{name}` returned the documents' ids {out.tolist()}: return the rows (indices into "
                          "values) where each of those documents is strongest.")  # fmt: skip
    if torch.equal(out, values.topk(5).indices):
        raise CheckFailed(f"`{name}` returned five rows of the same document: keep only each document's largest "
                          "value, so that the dashboard shows five different contexts.")  # fmt: skip
    if set(out.tolist()) == set(want.tolist()) and not torch.equal(out, want):
        raise CheckFailed(f"`{name}` has the right rows in the wrong order: largest first.")
    by_mean = torch.zeros(30).index_add_(0, doc, values) / torch.bincount(doc, minlength=30)
    if not torch.equal(by_mean.topk(5).indices, want_docs) and torch.equal(doc[out], by_mean.topk(5).indices):
        raise CheckFailed(f"`{name}` ranks the documents by their mean value: rank them by their strongest value, "
                          "the row the dashboard shows.")  # fmt: skip
    if torch.equal(doc[out], want_docs) and not torch.equal(out, want):
        raise CheckFailed(f"`{name}` picks the right documents but not each one's strongest row: within a "
                          "document, return the row with its largest value.")  # fmt: skip
    if not torch.equal(out, want):
        raise CheckFailed(f"`{name}` returned rows {out.tolist()}; expected {want.tolist()}.")
    passed(name, "the k best documents, each at its strongest token, largest first")


def check_logit_effects(fn: Callable, model, sae) -> None:
    """fn(direction [d_model], W_U [d_model, d_vocab], k) -> (top token ids [k], bottom token ids [k])."""
    name = _name(fn, "logit_effects")
    W_U = model.W_U.detach().float().cpu()
    transposed = (f"W_U is [d_model, d_vocab] = {list(W_U.shape)} and the direction [d_model]: the logit effects are "
                  "direction @ W_U (or W_U.T @ direction), [d_vocab].")  # fmt: skip
    g = torch.Generator().manual_seed(66)
    for latent in torch.randint(0, sae.cfg.d_sae, (3,), generator=g).tolist():
        direction = sae.W_dec[latent].detach().float().cpu()
        out = call(fn, direction, W_U, 8, name=name, explain={RuntimeError: transposed})
        if not isinstance(out, tuple) or len(out) != 2:
            raise CheckFailed(f"`{name}` should return two tensors (promoted ids, suppressed ids).")
        if isinstance(out[0], torch.Tensor) and out[0].is_floating_point():
            raise CheckFailed(f"`{name}` returned floating-point values: return the token ids, .topk(k).indices, "
                              "not .values.")  # fmt: skip
        top = expect_tensor(torch.as_tensor(out[0]), (8,), ["k"], f"{name}'s promoted ids", floating=False)
        bottom = expect_tensor(torch.as_tensor(out[1]), (8,), ["k"], f"{name}'s suppressed ids", floating=False)
        logits = direction @ W_U
        if torch.equal(top, logits.topk(8, largest=False).indices):
            raise CheckFailed(f"`{name}` swapped the two lists: promoted tokens have the largest logit effect.")
        if torch.equal(top, logits.abs().topk(8).indices) and not torch.equal(top, logits.topk(8).indices):
            raise CheckFailed(f"`{name}` ranks the tokens by the size of their effect (abs): promoted means the "
                              "largest signed values of direction @ W_U, suppressed the most negative.")  # fmt: skip
        if not torch.equal(top, logits.topk(8).indices):
            raise CheckFailed(f"`{name}`'s promoted ids are not the 8 largest of direction @ W_U, largest first.")
        if torch.equal(bottom, logits.topk(8).indices.flip(0)) or not torch.equal(
            bottom, logits.topk(8, largest=False).indices
        ):
            raise CheckFailed(f"`{name}`'s suppressed ids should be the 8 most negative of direction @ W_U, "
                              "most negative first.")  # fmt: skip
    passed(name, "the decoder direction's most promoted and most suppressed tokens")


def check_detector_scores(fn: Callable) -> None:
    """fn(latents [n, d_sae], labels [n] bool) -> (precision, recall, f1), each [d_sae], 0 where undefined."""
    name = _name(fn, "detector_scores")
    g = torch.Generator().manual_seed(67)
    labels = torch.rand(400, generator=g) < 0.2
    latents = torch.randn(400, 6, generator=g)
    latents[:, 0] = labels.float() * 2  # a perfect detector
    latents[:, 1] = -1.0  # never active: precision, recall and F1 all 0
    latents[:, 2] = torch.where(labels, torch.rand(400, generator=g), -torch.rand(400, generator=g)) + 0.3
    out = call(fn, latents, labels, name=name)
    if not isinstance(out, tuple) or len(out) != 3:
        raise CheckFailed(f"`{name}` should return three tensors (precision, recall, f1), not {type(out).__name__}.")
    want = ref.detector_scores(latents, labels)
    nonzero = ref.detector_scores(latents.abs() + (latents != 0).float(), labels)  # active wherever not 0
    hits = ((latents > 0) & labels[:, None]).float().sum(0)
    for value, what in zip(out, ("precision", "recall", "f1")):
        value = torch.as_tensor(value)
        if value.shape == (6,) and not torch.isfinite(value).all():
            raise CheckFailed(f"`{name}`'s {what} has NaN: a latent that never fires (or a 0/0) scores 0.")
        value = expect_tensor(value, (6,), ["d_sae"], f"{name}'s {what}")
        other = {"precision": want["recall"], "recall": want["precision"]}.get(what)
        hints = [(other, f"{what} and {'recall' if what == 'precision' else 'precision'} are swapped: precision is "
                  "hits over tokens where the latent fires; recall is hits over tokens with the label.")] if other is not None else []  # noqa: E501  # fmt: skip
        hints.append((nonzero[what], f"{what} counts negative values as firing (latents != 0): a latent is active "
                      "where it is above 0."))  # fmt: skip
        if what == "recall":
            hints.append((hits / len(labels), "recall divides the hits by every token: divide by the tokens that "
                          "carry the label, labels.sum()."))  # fmt: skip
        if what == "f1":
            hints.append(((want["precision"] + want["recall"]) / 2, "F1 is the harmonic mean of precision and "
                          "recall, 2pr / (p + r), not their average (p + r) / 2."))  # fmt: skip
        expect_close(value, want[what], name, what, atol=1e-5, hints=hints)
    passed(name, "precision, recall and F1 of each latent as a detector, 0 where undefined")


# --- a sweep over strengths ---------------------------------------------------------------------


def _sweep_inputs() -> tuple[dict[str, torch.Tensor], torch.Tensor, list[float], torch.Tensor]:
    """Two kinds of direction, four emotions' rows each (of uneven lengths), nine prompts whose targets are
    not in the emotions' order, three strengths and a norm: a small stand-in for section 8's sweep."""
    g = torch.Generator().manual_seed(68)
    directions = {
        kind: torch.randn(4, 6, generator=g) * torch.tensor([[0.5], [1.0], [2.0], [3.5]])
        for kind in ("first", "second")
    }
    targets = torch.tensor([2, 0, 3, 1, 1, 0, 2, 3, 0])
    return directions, targets, [0.25, 0.5, 1.0], torch.tensor(7.0)


def check_strength_sweep(fn: Callable) -> None:
    """fn(measure, directions {kind: [emotion, d_model]}, targets [prompt], strengths, norm) ->
    {(kind, c): measure(each prompt's target row scaled to length c × norm)}."""
    name = _name(fn, "strength_sweep")
    directions, targets, strengths, norm = _sweep_inputs()
    given = {kind: rows.clone() for kind, rows in directions.items()}
    calls: list[torch.Tensor] = []

    def measure(vectors):  # a stand-in for next_word: it records what it is given and says which call it was
        if not isinstance(vectors, torch.Tensor):
            raise TypeError(f"measure takes the vectors [prompt, d_model] as a tensor, not {type(vectors).__name__}")
        calls.append(vectors.detach().clone())
        return vectors.new_full((len(vectors),), float(len(calls) - 1)), len(calls) - 1

    out = call(fn, measure, given, targets.clone(), list(strengths), norm.clone(), name=name)
    if any(not torch.equal(given[kind], rows) for kind, rows in directions.items()):
        raise CheckFailed(f"`{name}` changed the directions it was given in place (rows /= ... or rows.div_), so the "
                          "lesson's DIRECTIONS would be rescaled too; make a new tensor, unit = rows / "
                          "rows.norm(dim=-1, keepdim=True).")  # fmt: skip
    if not isinstance(out, dict):
        raise CheckFailed(f"`{name}` should return a dict from (kind, strength) to what measure returned, "
                          f"not {type(out).__name__}.")  # fmt: skip
    want_keys = {(kind, c) for kind in directions for c in strengths}
    keys = set(out)
    if keys != want_keys:
        if keys == {(c, kind) for kind, c in want_keys}:
            raise CheckFailed(f"`{name}`'s keys are (strength, kind); the lesson reads SWEEP[kind, c], so key the "
                              "dict by (kind, c).")  # fmt: skip
        if keys == {(kind, i) for kind in directions for i in range(len(strengths))}:
            raise CheckFailed(f"`{name}`'s keys hold the strength's position in the list (0, 1, 2), not the "
                              "strength; key the dict by the strength itself, sweep[kind, c] for c in "
                              "strengths.")  # fmt: skip
        if keys == set(directions) or keys == set(strengths):
            raise CheckFailed(f"`{name}`'s keys are {sorted(keys)}, one part of each setting, so each value "
                              "overwrote the one before; key the dict by both, (kind, c).")  # fmt: skip
        if keys < want_keys:
            missing = sorted({c for _, c in want_keys - keys})
            kinds = sorted({kind for kind, _ in want_keys - keys})
            if {c for _, c in keys} == set(strengths):
                raise CheckFailed(f"`{name}` leaves out the kind(s) {kinds}; loop over every kind, "
                                  "for kind, rows in directions.items().")  # fmt: skip
            raise CheckFailed(f"`{name}` skips the strength(s) {missing} of {strengths} (an off-by-one in the "
                              "sweep?); loop over every strength, for c in strengths.")  # fmt: skip
        raise CheckFailed(f"`{name}` returned the keys {sorted(keys, key=str)}; expected (kind, strength) "
                          f"for every kind in {list(directions)} and every strength in {strengths}.")  # fmt: skip
    if len(calls) != len(want_keys):
        raise CheckFailed(f"`{name}` called measure {len(calls)} times for {len(want_keys)} settings, and each call "
                          "runs the model; call it once per (kind, strength) and store what it returns, whole "
                          "(it is a pair: P(target) and target-word-first).")  # fmt: skip
    unit = {kind: rows / rows.norm(dim=-1, keepdim=True) for kind, rows in directions.items()}
    want = {(kind, c): (unit[kind] * c * norm)[targets] for kind, c in want_keys}
    n_prompts, d = len(targets), directions["first"].shape[1]
    for (kind, c), value in out.items():
        if not (isinstance(value, tuple) and len(value) == 2 and isinstance(value[1], int)):
            raise CheckFailed(f"`{name}` stored {type(value).__name__} under ({kind!r}, {c}), not what measure "
                              "returned; store measure's result whole, sweep[kind, c] = measure(vectors).")  # fmt: skip
        vectors = calls[value[1]]
        if vectors.shape == (len(directions[kind]), d) != (n_prompts, d):
            raise CheckFailed(f"`{name}` gave measure one vector per emotion {tuple(vectors.shape)}, not one per "
                              f"prompt ({n_prompts} prompts); give prompt i the row of its target emotion, "
                              "(unit * c * norm)[targets].")  # fmt: skip
        vectors = expect_tensor(vectors, (n_prompts, d), ["prompt", "d_model"], f"the vectors {name} gave measure")
        rows = directions[kind]
        hints = [
            ((rows * c * norm)[targets], "each row keeps its own length, so a strength means something else for "
             "every emotion and kind; divide each row by its length first, rows / rows.norm(dim=-1, "
             "keepdim=True)."),
            ((rows / rows.norm(dim=0, keepdim=True) * c * norm)[targets], "the rows were divided by each "
             "dimension's norm over the emotions (norm over dim=0, the wrong axis), so they do not have length "
             "c × norm; take each row's own norm, rows.norm(dim=-1, keepdim=True)."),
            ((rows / rows.norm() * c * norm)[targets], "the rows were divided by the norm of the whole matrix, "
             "so they keep their uneven lengths; divide each row by its own norm, rows.norm(dim=-1, "
             "keepdim=True)."),
            ((unit[kind] * c)[targets], "the vectors have length c, not c × norm; multiply by norm, since a "
             "strength is a share of the stream's norm at the names."),
            ((unit[kind] * norm)[targets], "the vectors have length norm at every strength; multiply by c as "
             "well, c × norm."),
            ((unit[kind] * c * norm)[torch.arange(n_prompts) % len(rows)], "prompt i got emotion i mod "
             f"{len(rows)}'s row, not its target's; index with targets, (unit * c * norm)[targets]."),
        ]  # fmt: skip
        for (other_kind, other_c), other in want.items():
            if (other_kind, other_c) != (kind, c):
                hints.append((other, f"the vectors stored under ({kind!r}, {c}) are those of ({other_kind!r}, "
                              f"{other_c}); compute them from this key's own rows and strength, inside both "
                              "loops."))  # fmt: skip
        expect_close(vectors, want[kind, c], name, f"vectors for ({kind!r}, {c})", atol=1e-4, hints=hints)
    passed(name, f"{len(want_keys)} settings, one call of measure each, with each prompt's row at c × norm")
