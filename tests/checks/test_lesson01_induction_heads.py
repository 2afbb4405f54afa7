"""Every lesson-01 check accepts a correct solution and rejects the stub and a plausible mistake.

The correct solutions here are written independently of the references in utils.metrics
(einsum vs. indexing, loops vs. vector code), so a check that merely compared a function
with itself could not pass them all.
"""

import functools

import pytest
import torch

from utils.checks import CheckFailed
from utils.checks import lesson01_induction_heads as c


def stub(*args, **kwargs):
    raise NotImplementedError("exercise")


# --- correct solutions, written another way than the references -----------------------


def attention_pattern(q, k):
    d = q.shape[-1]
    scores = (q.permute(1, 0, 2) @ k.permute(1, 2, 0)) / d**0.5
    n = q.shape[0]
    allowed = torch.tril(torch.ones(n, n, dtype=torch.bool))
    return torch.where(allowed, scores, torch.tensor(float("-inf"))).softmax(dim=-1)


def previous_token_scores(pattern):
    n = pattern.shape[-1]
    return torch.stack([pattern[:, i, i - 1] for i in range(1, n)], -1).mean(-1)


def duplicate_token_scores(pattern, period):
    return torch.stack([pattern[:, i, i - period] for i in range(period + 1, 2 * period + 1)], -1).mean(-1)


def induction_scores(pattern, period):
    return torch.stack([pattern[:, i, i - period + 1] for i in range(period + 1, 2 * period + 1)], -1).mean(-1)


def repeated_tokens(pool, period, batch, seed, bos):
    g = torch.Generator().manual_seed(seed)
    pool = torch.tensor(pool)
    rows = []
    for _ in range(batch):
        r = pool[torch.randperm(len(pool), generator=g)[:period]]
        rows.append(torch.cat([torch.tensor([bos]), r, r]))
    return torch.stack(rows)


def per_token_loss(logits, tokens):
    return torch.nn.functional.cross_entropy(logits[:, :-1].transpose(1, 2), tokens[:, 1:], reduction="none")


def ablate_head(z, hook, head):
    z = z.clone()
    z[:, :, head, :] = 0.0
    return z


def full_ov_circuit(W_E, W_V, W_O, W_U):
    return torch.einsum("sm,mh,hn,nt->st", W_E, W_V, W_O, W_U)


def composition_score(left, right):
    return torch.linalg.matrix_norm(left @ right) / (torch.linalg.matrix_norm(left) * torch.linalg.matrix_norm(right))


def copying_score(full_ov):
    return sum(int(row.argmax() == i) for i, row in enumerate(full_ov)) / full_ov.shape[0]


POOL = list(range(5, 60))
PERIOD = 25  # a lesson-wide global that a score function should not use
CASES = {
    "attention_pattern": (
        c.check_attention_pattern,
        attention_pattern,
        {
            "softmax over the query dimension": lambda q, k: (
                torch.einsum("qhd,khd->hqk", q, k)
                .div(4)
                .masked_fill(torch.ones(7, 7, dtype=torch.bool).triu(1), float("-inf"))
                .softmax(-2)
                .nan_to_num(0.0)
            ),
            "sqrt(d_head)": lambda q, k: (
                torch.einsum("qhd,khd->hqk", q, k)
                .masked_fill(torch.ones(7, 7, dtype=torch.bool).triu(1), float("-inf"))
                .softmax(-1)
            ),
            "causal mask": lambda q, k: torch.einsum("qhd,khd->hqk", q, k).div(4).softmax(-1),
            "not by d_head itself": lambda q, k: (
                torch.einsum("qhd,khd->hqk", q, k)
                .div(16)
                .masked_fill(torch.ones(7, 7, dtype=torch.bool).triu(1), float("-inf"))
                .softmax(-1)
            ),
            "not by sqrt(d_model)": lambda q, k: (
                torch.einsum("qhd,khd->hqk", q, k)
                .div((q.shape[1] * q.shape[2]) ** 0.5)
                .masked_fill(torch.ones(7, 7, dtype=torch.bool).triu(1), float("-inf"))
                .softmax(-1)
            ),
            "fill them with -inf": lambda q, k: (
                torch.einsum("qhd,khd->hqk", q, k)
                .div(4)
                .masked_fill(torch.ones(7, 7, dtype=torch.bool).triu(1), 0.0)
                .softmax(-1)
            ),
        },
    ),
    "previous_token_scores": (
        c.check_previous_token_scores,
        previous_token_scores,
        {
            "offset=-1": lambda p: p.diagonal(dim1=-2, dim2=-1).mean(-1),
            "mean over positions": lambda p: p.diagonal(offset=-1, dim1=-2, dim2=-1).sum(-1),
            "above the main one (offset=+1)": lambda p: p.diagonal(offset=1, dim1=-2, dim2=-1).mean(-1),
            "position 0 has nothing before it": lambda p: p.diagonal(offset=-1, dim1=-2, dim2=-1).sum(-1) / p.shape[-1],
        },
    ),
    "duplicate_token_scores": (
        c.check_duplicate_token_scores,
        duplicate_token_scores,
        {
            "induction score": induction_scores,
            "hard-coded": lambda p, period: duplicate_token_scores(p, 6),
            "not from a global such as PERIOD": lambda p, period: duplicate_token_scores(p, PERIOD),
        },
    ),
    "induction_scores": (
        c.check_induction_scores,
        induction_scores,
        {
            "duplicate-token score": duplicate_token_scores,
            "hard-coded": lambda p, period: induction_scores(p, 6),
            "not from a global such as PERIOD": lambda p, period: induction_scores(p, PERIOD),
        },
    ),
    "per_token_loss": (
        c.check_per_token_loss,
        per_token_loss,
        {
            "off by one": lambda l, t: torch.nn.functional.cross_entropy(
                l[:, 1:].transpose(1, 2), t[:, 1:], reduction="none"
            ),
            "log_softmax": lambda l, t: -l[:, :-1].gather(-1, t[:, 1:, None])[..., 0],
        },
    ),
    "ablate_head": (
        c.check_ablate_head,
        ablate_head,
        {
            "zeroed a position": lambda z, hook, head: z.clone().index_fill_(1, torch.tensor([head]), 0.0),
            "not a fixed one": lambda z, hook, head: z.clone().index_fill_(2, torch.tensor([2]), 0.0),
            "not `-head`": lambda z, hook, head: z.clone().index_fill_(2, torch.tensor([-head % z.shape[2]]), 0.0),
            "returned None and left `z` unchanged": lambda z, hook, head: None,
            "mean ablation": lambda z, hook, head: z.clone().index_copy_(
                2, torch.tensor([head]), z[:, :, [head]].mean((0, 1), keepdim=True).expand(*z.shape[:2], 1, -1)
            ),
            "zero only the chosen head": lambda z, hook, head: torch.zeros_like(z).index_copy_(
                2, torch.tensor([head]), z[:, :, [head]]
            ),
        },
    ),
    "full_ov_circuit": (
        c.check_full_ov_circuit,
        full_ov_circuit,
        {
            "transposed": lambda W_E, W_V, W_O, W_U: (W_E @ W_V @ W_O @ W_U).T,
            "not through W_V transposed": lambda W_E, W_V, W_O, W_U: W_E @ W_V @ W_V.T @ W_U,
            "dimension 1 (output token)": lambda W_E, W_V, W_O, W_U: W_E @ W_V @ W_O,
        },
    ),
    "composition_score": (
        c.check_composition_score,
        composition_score,
        {
            "product of the two norms": lambda a, b: (a @ b).norm(),
            "order given": lambda a, b: (b @ a).norm() / (a.norm() * b.norm()),
        },
    ),
    "copying_score": (
        c.check_copying_score,
        copying_score,
        {
            "each row": lambda m: (m.argmax(0) == torch.arange(m.shape[0])).float().mean(),
            "among the top few": lambda m: (
                (m.topk(2, dim=-1).indices == torch.arange(m.shape[0])[:, None]).any(-1).float().mean()
            ),
        },
    ),
}


@pytest.mark.parametrize("exercise", sorted(CASES))
def test_check_accepts_a_correct_solution_and_rejects_the_stub_and_each_mistake(exercise, prove_check):
    check, solution, wrong = CASES[exercise]
    prove_check(check, solution, wrong)


def no_bos(pool, p, b, s, bos):
    return repeated_tokens(pool, p, b, s, bos)[:, 1:].repeat(1, 1)[:, :15]


def unrepeated(pool, p, b, s, bos):
    draws = torch.randint(len(pool), (b, 2 * p), generator=torch.Generator().manual_seed(s))
    return torch.cat([torch.full((b, 1), bos), torch.tensor(pool)[draws]], 1)


def floats(pool, p, b, s, bos):
    return repeated_tokens(pool, p, b, s, bos).float()


def unseeded(pool, p, b, s, bos):
    return repeated_tokens(pool, p, b, int(torch.randint(10**6, ())), bos)


def bos_zero(pool, p, b, s, bos):
    return repeated_tokens(pool, p, b, s, 0)


REPEATED_TOKENS_MISTAKES = {
    "second copy repeats the first": unrepeated,
    "integers": floats,
    "same seed": unseeded,
    "use the `bos` argument": bos_zero,
}


def test_repeated_tokens_check_accepts_a_solution_and_rejects_the_stub_and_each_mistake(prove_check):
    prove_check(c.check_repeated_tokens, repeated_tokens, REPEATED_TOKENS_MISTAKES, POOL, 0)
    with pytest.raises(CheckFailed):
        c.check_repeated_tokens(no_bos, POOL, 0)


def test_repeated_tokens_check_names_the_bos_token_it_was_given(prove_check):
    message = "must start with the BOS token passed as `bos` (50256)"
    prove_check(c.check_repeated_tokens, repeated_tokens, {message: bos_zero}, POOL, 50256)


def ablate_in_place_and_return(z, hook, head):
    z[:, :, head] = 0
    return z


def ablate_in_place_return_none(z, hook, head):
    z[:, :, head] = 0


@pytest.mark.parametrize("hook", [ablate_in_place_and_return, ablate_in_place_return_none])
def test_ablation_check_accepts_the_in_place_hook_idioms(hook, capsys):
    c.check_ablate_head(hook)
    assert "✓" in capsys.readouterr().out


def test_the_bridge_honours_in_place_hook_edits_as_the_check_assumes():
    from utils import load_model

    model = load_model("storyworld-attn2l", device="cpu")
    x = torch.tensor([[0, 5, 9, 14, 5, 9, 14]])

    def returned(z, hook):
        z = z.clone()
        z[:, :, 1] = 0.0
        return z

    def in_place(z, hook):
        z[:, :, 1] = 0.0

    with torch.no_grad():
        a = model.run_with_hooks(x, fwd_hooks=[("blocks.0.attn.hook_z", returned)])
        b = model.run_with_hooks(x, fwd_hooks=[("blocks.0.attn.hook_z", in_place)])
        clean = model(x)
    assert torch.allclose(a, b) and not torch.allclose(a, clean)


def with_replacement_torch(offset):
    def repeated(pool, period, batch, seed, bos):
        g = torch.Generator().manual_seed(seed + offset)
        r = torch.tensor(pool)[torch.randint(len(pool), (batch, period), generator=g)]
        return torch.cat([torch.full((batch, 1), bos), r, r], 1)

    return repeated


def with_replacement_numpy(offset):
    import numpy as np

    def repeated(pool, period, batch, seed, bos):
        rng = np.random.default_rng(seed + offset)
        r = torch.tensor(np.stack([rng.choice(pool, period) for _ in range(batch)]))  # replace=True by default
        return torch.cat([torch.full((batch, 1), bos), r, r], 1)

    return repeated


@pytest.mark.parametrize("make", [with_replacement_torch, with_replacement_numpy], ids=["torch.randint", "rng.choice"])
def test_sampling_with_replacement_fails_the_check_for_every_seed(make):
    for offset in range(200):
        with pytest.raises(CheckFailed, match="without replacement"):
            c.check_repeated_tokens(make(offset), POOL, 0)


# --- the one-head ablation loop, run on the lesson's model -----------------------------------


@pytest.fixture(scope="module")
def attn2l():
    """storyworld-attn2l on the CPU, gradients off, as the lesson loads it."""
    from utils import load_model

    with torch.no_grad():
        yield load_model("storyworld-attn2l", device="cpu")


def share_lost_by_head(losses, n_layers, n_heads, ablate):
    first, second = losses()
    hooks = [
        [(f"blocks.{l}.attn.hook_z", functools.partial(ablate, head=h))]
        for l in range(n_layers)
        for h in range(n_heads)
    ]
    after = torch.tensor([losses(h)[1] for h in hooks]).reshape(n_layers, n_heads)
    return (after - second) / (first - second)


def _loop(measure):
    """A loop over every head, one hook each, that returns measure(first, second, first after, second after)."""

    def loop(losses, n_layers, n_heads, ablate):
        first, second = losses([])
        out = torch.zeros(n_layers, n_heads)
        for l in range(n_layers):
            for h in range(n_heads):
                f, s = losses([(f"blocks.{l}.attn.hook_z", functools.partial(ablate, head=h))])
                out[l, h] = measure(first, second, f, s)
        return out

    return loop


def piling_up(losses, n_layers, n_heads, ablate):
    first, second = losses([])
    out, hooks = torch.zeros(n_layers, n_heads), []
    for l in range(n_layers):
        for h in range(n_heads):
            hooks.append((f"blocks.{l}.attn.hook_z", functools.partial(ablate, head=h)))
            out[l, h] = (losses(hooks)[1] - second) / (first - second)
    return out


def zero_head(z, hook, head):
    z = z.clone()
    z[:, :, head] = 0.0
    return z


def zeroing_instead(losses, n_layers, n_heads, ablate):
    return share_lost_by_head(losses, n_layers, n_heads, zero_head)


def hook_without_head(losses, n_layers, n_heads, ablate):
    first, second = losses([])
    return torch.tensor(
        [[losses([(f"blocks.{l}.attn.hook_z", ablate)])[1] for _ in range(n_heads)] for l in range(n_layers)]
    )


def own_sequences(losses, n_layers, n_heads, ablate):
    return torch.zeros(n_layers, n_heads)  # as if measured with the lesson's own losses_over_periods


SHARE_LOST_MISTAKES = {
    "the hooks pile up": piling_up,
    "not the share of the drop lost": _loop(lambda first, second, f, s: s),
    "how much the second copy's loss rose": _loop(lambda first, second, f, s: s - second),
    "divided by the drop in the ablated run": _loop(lambda first, second, f, s: (s - second) / (f - second)),
    "you read the first copy's loss": _loop(lambda first, second, f, s: (f - first) / (first - second)),
    "sign:": _loop(lambda first, second, f, s: (second - s) / (first - second)),
    "you zeroed each head instead of calling the hook you were given": zeroing_instead,
    "partial(ablate, head=h)": hook_without_head,
    "never called the `losses` it was given": own_sequences,
    "rows should be layers and columns heads": lambda *a: share_lost_by_head(*a).T,
    "return one tensor [layer, head]": lambda *a: share_lost_by_head(*a).tolist(),
}


def test_the_ablation_loop_check_accepts_a_loop_and_rejects_the_stub_and_each_mistake(attn2l, prove_check):
    prove_check(c.check_share_lost_by_head, share_lost_by_head, SHARE_LOST_MISTAKES, attn2l)
    prove_check(
        c.check_share_lost_by_head,
        _loop(lambda first, second, f, s: (s - second) / (first - second)),
        {},
        attn2l,
    )


def test_the_ablation_loop_checks_sequences_are_copied_so_every_share_has_a_drop_to_divide(attn2l):
    first, second = c._copy_losses(attn2l, c._ablation_runs(attn2l))
    assert first - second > 3.0, (first, second)


def baseline_every_head(losses, n_layers, n_heads, ablate):
    """Right values, but the run without hooks is repeated once per head."""
    out = torch.zeros(n_layers, n_heads)
    for l in range(n_layers):
        for h in range(n_heads):
            first, second = losses([])
            s = losses([(f"blocks.{l}.attn.hook_z", functools.partial(ablate, head=h))])[1]
            out[l, h] = (s - second) / (first - second)
    return out


@pytest.mark.parametrize(
    "loop, plain", [(share_lost_by_head, 1), (baseline_every_head, None)], ids=["once", "per head"]
)
def test_the_ablation_loop_checks_message_counts_the_runs_the_loop_made(attn2l, capsys, loop, plain):
    c.check_share_lost_by_head(loop, attn2l)
    heads = attn2l.cfg.n_layers * attn2l.cfg.n_heads
    plain = heads if plain is None else plain
    assert f"{heads} runs with one head ablated and {plain} without hooks" in capsys.readouterr().out
