"""Every lesson-03 check accepts a correct solution and rejects the stub and each plausible mistake,
naming the mistake.

The correct solutions here are written another way than the notebook's and the checks' references
(string splitting, loops, the course's batched ``patch_sweep``, all senders in one batch), so a
check that merely compared a function with itself could not pass them all. The wrong answers are
written as a learner would write them, as small changes to a correct solution. The model checks
run on two zoo models: one with learned positions and LayerNorm, one with rotary positions and
RMSNorm.
"""

import re
import weakref

import pytest
import torch

from utils.checks import lesson03_patching as c
from utils.interventions.sweeps import patch_sweep

# --- correct solutions ---------------------------------------------------------------


def exchange_names(text, a, b):
    words = re.split(r"(\W+)", text)
    return "".join(b if w == a else a if w == b else w for w in words)


def exchange_names_through_a_placeholder(text, a, b):
    text = re.sub(rf"\b{a}\b", "\0", text)
    text = re.sub(rf"\b{b}\b", a, text)
    return text.replace("\0", b)


def normalised_logit_diff(ld, clean, corrupted):
    return 1 - (clean - ld) / (clean - corrupted)


def attribution_scores(clean, corrupted, grad):
    return torch.einsum("bphd,bphd->h", clean - corrupted, grad)


def rank_correlation(x, y):
    n = len(x)
    rx = torch.empty(n)
    ry = torch.empty(n)
    rx[x.argsort()] = torch.arange(n, dtype=torch.float)
    ry[y.argsort()] = torch.arange(n, dtype=torch.float)
    return float(1 - 6 * ((rx - ry) ** 2).sum() / (n * (n**2 - 1)))


def rank_correlation_from_one(x, y):
    rx, ry = x.argsort().argsort() + 1.0, y.argsort().argsort() + 1.0
    return torch.corrcoef(torch.stack([rx, ry]))[0, 1]


def ablate_except(z, keep, means):
    out = z.clone()
    for h in range(z.shape[2]):
        if not keep[h]:
            out[:, :, h] = means[:, h]
    return out


def ablate_except_by_arithmetic(z, keep, means):
    k = keep.float()[:, None]
    return z * k + means * (1 - k)


def act_patch_by_position(model, corrupted, clean_cache, metric, hook):
    n_pos = corrupted.shape[1]
    return torch.stack(
        [
            patch_sweep(
                model,
                corrupted,
                f"blocks.{l}.hook_{hook}",
                clean_cache[f"blocks.{l}.hook_{hook}"],
                torch.eye(n_pos, dtype=torch.bool),
                metric,
            )
            for l in range(model.cfg.n_layers)
        ]
    )


def _by_position(rows="repeat", view="copy", read="copy", shift=0, all_copies=False, forget_return=False):
    """A learner's ``act_patch_by_position``, copy j patched at position j + shift, with the copies laid
    out as ``rows`` (``repeat`` or ``repeat_interleave``), viewed in the hook as ``view`` and split
    for the metric as ``read`` (``"copy"``: [copy, batch, ...]; ``"batch"``: [batch, copy, ...])."""

    def act_patch_by_position(model, corrupted, clean_cache, metric, hook):
        batch, n_pos = corrupted.shape
        tokens = corrupted.repeat(n_pos, 1) if rows == "repeat" else corrupted.repeat_interleave(n_pos, 0)
        j = torch.arange(n_pos)
        at = (j + shift) % n_pos
        out = torch.zeros(model.cfg.n_layers, n_pos)
        for layer in range(model.cfg.n_layers):
            name = f"blocks.{layer}.hook_{hook}"
            clean = clean_cache[name]

            def patch(act, hook=None, clean=clean):
                if view == "copy":
                    act = act.clone().view(n_pos, batch, n_pos, -1)
                    act[j, :, at] = clean[:, at].transpose(0, 1)
                else:
                    act = act.clone().view(batch, n_pos, n_pos, -1)
                    act[:, j, at] = clean[:, at]
                if not forget_return:
                    return act.view(n_pos * batch, n_pos, -1)

            logits = model.run_with_hooks(tokens, fwd_hooks=[(name, patch)])
            if all_copies:
                out[layer] = metric(logits)
            elif read == "copy":
                out[layer] = torch.stack([metric(lg) for lg in logits.view(n_pos, batch, *logits.shape[1:])])
            else:
                out[layer] = torch.stack([metric(logits.view(batch, n_pos, *logits.shape[1:])[:, k]) for k in j])
        return out

    return act_patch_by_position


def act_patch_heads(model, corrupted, clean_cache, metric, kind):
    n_pos, H = corrupted.shape[1], model.cfg.n_heads
    mask = torch.zeros(H, n_pos, H, dtype=torch.bool)
    mask[torch.arange(H), :, torch.arange(H)] = True
    return _head_sweeps(model, corrupted, clean_cache, metric, kind, mask)


def _head_sweeps(model, corrupted, clean_cache, metric, kind, mask):
    """``[layer, patch]``: one sweep of ``mask`` (``[patch, position, head]``) over each layer's ``hook_{kind}``."""
    return torch.stack(
        [
            patch_sweep(
                model,
                corrupted,
                f"blocks.{l}.attn.hook_{kind}",
                clean_cache[f"blocks.{l}.attn.hook_{kind}"],
                mask,
                metric,
            )
            for l in range(model.cfg.n_layers)
        ]
    )


def _heads(
    rows="repeat", view="copy", read="copy", final_only=False, hook_z=False, without_attn=False, head_on_position=False
):
    """A learner's ``act_patch_heads`` (copy h gets head h), with the layouts of ``_by_position``."""

    def act_patch_heads(model, corrupted, clean_cache, metric, kind):
        batch, H = corrupted.shape[0], model.cfg.n_heads
        tokens = corrupted.repeat(H, 1) if rows == "repeat" else corrupted.repeat_interleave(H, 0)
        h = torch.arange(H)
        at = slice(-1, None) if final_only else slice(None)
        out = torch.zeros(model.cfg.n_layers, H)
        for layer in range(model.cfg.n_layers):
            name = f"blocks.{layer}.{'' if without_attn else 'attn.'}hook_{'z' if hook_z else kind}"
            clean = clean_cache[name]

            def patch(act, hook=None, clean=clean):
                if head_on_position:
                    act = act.clone().view(H, batch, *act.shape[1:])
                    act[h, :, h] = clean.permute(2, 0, 1, 3)
                    return act.view(H * batch, *act.shape[2:])
                if view == "copy":
                    act = act.clone().view(H, batch, *act.shape[1:])
                    act[h, :, at, h] = clean[:, at].permute(2, 0, 1, 3)
                    return act.view(H * batch, *act.shape[2:])
                act = act.clone().view(batch, H, *act.shape[1:])
                act[:, h, at, h] = clean[:, at].permute(2, 0, 1, 3)
                return act.view(batch * H, *act.shape[2:])

            logits = model.run_with_hooks(tokens, fwd_hooks=[(name, patch)])
            if read == "copy":
                out[layer] = torch.stack([metric(lg) for lg in logits.view(H, batch, *logits.shape[1:])])
            else:
                out[layer] = torch.stack([metric(logits.view(batch, H, *logits.shape[1:])[:, j]) for j in h])
        return out

    return act_patch_heads


def path_patch(model, corrupted, clean_cache, corrupted_cache, senders, receivers, receiver_input, metric):
    return _path_patch()(model, corrupted, clean_cache, corrupted_cache, senders, receivers, receiver_input, metric)


def _path_patch(mistake=None):
    """All senders at once, one copy of the batch per sender; ``mistake`` makes it a learner's wrong answer."""

    def path_patch(model, corrupted, clean_cache, corrupted_cache, senders, receivers, receiver_input, metric):
        k, batch = len(senders), corrupted.shape[0]
        L = model.cfg.n_layers
        rep = corrupted.repeat(k, 1)

        def copies(name):
            return corrupted_cache[name].repeat(k, *[1] * (corrupted_cache[name].ndim - 1)).view(k, batch, -1)

        def step1(z, hook, layer):
            shape = z.shape
            if mistake in ("nothing frozen", "sender's layer only"):
                z = z.clone().view(k, batch, *shape[1:])
            else:
                z = corrupted_cache[f"blocks.{layer}.attn.hook_z"].repeat(k, 1, 1, 1).view(k, batch, *shape[1:])
            for j, (sl, sh) in enumerate(senders):
                if mistake == "sender's layer only" and sl == layer:
                    z[j] = corrupted_cache[f"blocks.{layer}.attn.hook_z"]
                if (sl == layer or mistake == "sender's head everywhere") and mistake != "sender never clean":
                    z[j, :, :, sh] = clean_cache[f"blocks.{layer}.attn.hook_z"][:, :, sh]
            return z.view(shape)

        def sender_clean(z, hook, layer):
            z = z.clone().view(k, batch, *z.shape[1:])
            for j, (sl, sh) in enumerate(senders):
                if sl == layer:
                    z[j, :, :, sh] = clean_cache[f"blocks.{layer}.attn.hook_z"][:, :, sh]
            return z.view(k * batch, *z.shape[2:])

        kept = {}
        layers = sorted({l for l, _ in receivers})
        hooks = [(f"blocks.{l}.attn.hook_z", lambda z, hook, l=l: step1(z, hook, l)) for l in range(L)]
        if mistake == "MLPs frozen":
            hooks += [
                (f"blocks.{l}.hook_mlp_out", lambda a, hook, l=l: copies(f"blocks.{l}.hook_mlp_out").view(a.shape))
                for l in range(L)
            ]
        hooks += [
            (f"blocks.{l}.attn.hook_{receiver_input}", lambda a, hook, l=l: kept.__setitem__(l, a.clone()))
            for l in layers
        ]
        model.run_with_hooks(rep, fwd_hooks=hooks)

        def patch(act, hook, layer):
            act = act.clone()
            heads = [h for l, h in receivers if l == layer]
            if mistake == "whole layers":
                heads = list(range(act.shape[2]))
            act[:, :, heads] = kept[layer][:, :, heads]
            return act

        hooks = [(f"blocks.{l}.attn.hook_{receiver_input}", lambda a, hook, l=l: patch(a, hook, l)) for l in layers]
        if mistake == "sender in step 2":
            hooks += [(f"blocks.{l}.attn.hook_z", lambda z, hook, l=l: sender_clean(z, hook, l)) for l in range(L)]
        if mistake == "step 1 kept":
            hooks += [(f"blocks.{l}.attn.hook_z", lambda z, hook, l=l: step1(z, hook, l)) for l in range(L)]
        logits = model.run_with_hooks(rep, fwd_hooks=hooks)
        return torch.stack([torch.as_tensor(metric(lg)) for lg in logits.view(k, batch, *logits.shape[1:])])

    return path_patch


# --- plausible mistakes ------------------------------------------------------------------


def _all_positions(model, corrupted, clean_cache, metric, hook):
    """Patches the whole layer in every copy."""
    n_pos = corrupted.shape[1]
    return torch.stack(
        [
            patch_sweep(
                model,
                corrupted,
                f"blocks.{l}.hook_{hook}",
                clean_cache[f"blocks.{l}.hook_{hook}"],
                torch.ones(n_pos, n_pos, dtype=torch.bool),
                metric,
            )
            for l in range(model.cfg.n_layers)
        ]
    )


def _resid_post(model, corrupted, clean_cache, metric, hook):
    if hook != "resid_pre":
        return act_patch_by_position(model, corrupted, clean_cache, metric, hook)
    n_pos = corrupted.shape[1]
    return torch.stack(
        [
            patch_sweep(
                model,
                corrupted,
                f"blocks.{l}.hook_resid_post",
                clean_cache[f"blocks.{l}.hook_resid_post"],
                torch.eye(n_pos, dtype=torch.bool),
                metric,
            )
            for l in range(model.cfg.n_layers)
        ]
    )


def _whole_layer(model, corrupted, clean_cache, metric, kind):
    n_pos, H = corrupted.shape[1], model.cfg.n_heads
    return _head_sweeps(model, corrupted, clean_cache, metric, kind, torch.ones(H, n_pos, H, dtype=torch.bool))


def _clean_inputs(model, corrupted, clean_cache, corrupted_cache, senders, receivers, receiver_input, metric):
    """Skips step 1: the receivers' inputs straight from the clean run."""
    layers = sorted({l for l, _ in receivers})

    def patch(act, hook, layer):
        act = act.clone()
        heads = [h for l, h in receivers if l == layer]
        act[:, :, heads] = clean_cache[hook.name][:, :, heads]
        return act

    hooks = [(f"blocks.{l}.attn.hook_{receiver_input}", lambda a, hook, l=l: patch(a, hook, l)) for l in layers]
    return torch.as_tensor(metric(model.run_with_hooks(corrupted, fwd_hooks=hooks))).expand(len(senders))


def _spaces(text, a, b):
    return " ".join(b if w == a else a if w == b else w for w in text.split(" "))


def _strips_only_stops_and_commas(text, a, b):
    words = []
    for w in text.split(" "):
        core = w.rstrip(".,")
        words.append({a: b, b: a}.get(core, core) + w[len(core) :])
    return " ".join(words)


CASES = {
    "exchange_names": (
        c.check_exchange_names,
        exchange_names,
        {
            "turns both names into the same name": lambda t, a, b: t.replace(a, b).replace(b, a),
            "cannot do that, because the second replacement": lambda t, a, b: t.replace(a, b),
            "cannot do that": lambda t, a, b: re.sub(rf"\b{b}\b", a, t),
            "unchanged when punctuation follows it": _spaces,
            'so "Ann." is not the word "Ann"': lambda t, a, b: " ".join({a: b, b: a}.get(w, w) for w in t.split()),
            "only the first occurrence": lambda t, a, b: re.sub(
                rf"\b({a}|{b})\b", lambda m: b if m.group(0) == a else a, t, count=1
            ),
            "only the first occurrence: every mention": lambda t, a, b: (
                t.replace(a, "#", 1).replace(b, a, 1).replace("#", b, 1)
            ),
            "'Al' is also the start of 'Alma'": lambda t, a, b: t.replace(a, "#").replace(b, a).replace("#", b),
            "inside a longer word": lambda t, a, b: re.sub(f"{a}|{b}", lambda m: b if m.group(0) == a else a, t),
            "unchanged when no space comes before it": lambda t, a, b: re.sub(
                rf"(?<=\s)({a}|{b})\b", lambda m: b if m.group(0) == a else a, t
            ),
            "changes a longer word that begins with 'Al'": lambda t, a, b: (
                re.sub(rf"\b{a}\b", "\0", t).replace(f" {b}", f" {a}").replace("\0", b)
            ),
            # a name last in the text, or before punctuation other than . and ,: named by the case it gets wrong
            "gives 'Bob gave the kite to Bob'": lambda t, a, b: re.sub(
                rf"\b({a}|{b})(?=\W)", lambda m: b if m.group(0) == a else a, t
            ),
            '(not Bob) kept it"; expected': _strips_only_stops_and_commas,
        },
    ),
    "normalised_logit_diff": (
        c.check_normalised_logit_diff,
        normalised_logit_diff,
        {
            "logit difference itself": lambda ld, clean, corrupted: ld.clone(),
            "divide by (clean − corrupted), so": lambda ld, clean, corrupted: ld - corrupted,
            "sign is flipped": lambda ld, clean, corrupted: (corrupted - ld) / (clean - corrupted),
            "0 at the clean run": lambda ld, clean, corrupted: (ld - clean) / (clean - corrupted),
            "not by |clean| + |corrupted|": lambda ld, clean, corrupted: (
                (ld - corrupted) / (abs(clean) + abs(corrupted))
            ),
            "not by the clean logit difference alone": lambda ld, clean, corrupted: (ld - corrupted) / clean,
            "1 minus the score": lambda ld, clean, corrupted: (ld - clean) / (corrupted - clean),
            "do not clamp": lambda ld, clean, corrupted: ((ld - corrupted) / (clean - corrupted)).clamp(0, 1),
            "subtract the corrupted logit difference before dividing": lambda ld, clean, corrupted: (
                ld / (clean - corrupted)
            ),
        },
    ),
    "attribution_scores": (
        c.check_attribution_scores,
        attribution_scores,
        {
            "sign is flipped": lambda cl, co, g: attribution_scores(co, cl, g),
            "*change* of the activation": lambda cl, co, g: (cl * g).sum((0, 1, 3)),
            "do not average": lambda cl, co, g: ((cl - co) * g).mean((0, 1, 3)),
            "absolute values of the products": lambda cl, co, g: torch.einsum("bphd->h", ((cl - co) * g).abs()),
            "keep the sign of each score": lambda cl, co, g: attribution_scores(cl, co, g).abs(),
            "final position only": lambda cl, co, g: torch.einsum("bhd,bhd->h", cl[:, -1] - co[:, -1], g[:, -1]),
            "averaged over the prompts": lambda cl, co, g: ((cl - co) * g).mean(0).sum((0, 2)),
            "you multiplied the sums": lambda cl, co, g: (cl - co).sum((0, 1, 3)) * g.sum((0, 1, 3)),
        },
    ),
    "rank_correlation": (
        c.check_rank_correlation,
        rank_correlation,
        {
            "Pearson's correlation": lambda x, y: torch.corrcoef(torch.stack([x, y]))[0, 1],
            "not the ranks": lambda x, y: torch.corrcoef(torch.stack([x.argsort().float(), y.argsort().float()]))[0, 1],
            "did not centre the ranks": lambda x, y: torch.nn.functional.cosine_similarity(
                x.argsort().argsort().float(), y.argsort().argsort().float(), dim=0
            ),
            "did not centre": lambda x, y: torch.nn.functional.cosine_similarity(
                x.argsort().argsort() + 1.0, y.argsort().argsort() + 1.0, dim=0
            ),
            "one ranking is in descending order": lambda x, y: rank_correlation(x, -y),
        },
    ),
    "ablate_except": (
        c.check_ablate_except,
        ablate_except,
        {
            "swap the two": lambda z, keep, means: ablate_except(z, ~keep, means),
            "not by zero": lambda z, keep, means: ablate_except(z, keep, torch.zeros_like(means)),
            "its own mean": lambda z, keep, means: ablate_except(z, keep, means.mean(0).expand_as(means)),
            "the first position's mean at every position": lambda z, keep, means: ablate_except(
                z, keep, means[:1].expand_as(means)
            ),
            "a mean of `z`, this batch's own": lambda z, keep, means: ablate_except(z, keep, z.mean(0)),
            "a mean of `z`": lambda z, keep, means: ablate_except(z, keep, z.mean((0, 1)).expand_as(means)),
        },
    ),
}

MODEL_CASES = {
    "act_patch_by_position": (
        c.check_act_patch_by_position,
        act_patch_by_position,
        {
            "same score at every position": _all_positions,
            "hook_resid_post": _resid_post,
            "every copy at once": _by_position(all_copies=True),
            "your hook views the activation as [batch, copy, ...]": _by_position(view="batch"),
            "`repeat_interleave` puts the copies of each prompt next to each other": _by_position(rows="interleave"),
            "the logits are split the wrong way: `repeat` stacks": _by_position(read="batch"),
            "the true score at position j − 1": _by_position(shift=-1),
            "the true score at position j + 1": _by_position(shift=1),
            "every score is 0, the corrupted run's own": _by_position(forget_return=True),
        },
    ),
    "act_patch_heads": (
        c.check_act_patch_heads,
        act_patch_heads,
        {
            "every head of a layer the same score": _whole_layer,
            "at the final position only": _heads(final_only=True),
            "those are the scores of patching `hook_z`": _heads(hook_z=True),
            "your hook views the activation as [batch, copy, ...]": _heads(view="batch"),
            "`repeat_interleave` puts the copies": _heads(rows="interleave"),
            "The attention hooks live under `.attn`": _heads(without_attn=True),
            "so the head is the fourth axis": _heads(head_on_position=True),
        },
    ),
    "path_patch": (
        c.check_path_patch,
        path_patch,
        {
            "every sender gives the same score": _clean_inputs,
            "step 1 let the other heads react": _path_patch("nothing frozen"),
            "not only in the sender's layer": _path_patch("sender's layer only"),
            "step 1 also froze the MLPs": _path_patch("MLPs frozen"),
            "step 2 patched every head of a receiver's layer": _path_patch("whole layers"),
            "step 2 also put in the sender's clean output": _path_patch("sender in step 2"),
            "in step 1 the sender kept its corrupted output": _path_patch("sender never clean"),
            "head (1, 3) is not head (2, 3)": _path_patch("sender's head everywhere"),
            "step 2 kept step 1's freezing hooks": _path_patch("step 1 kept"),
        },
    ),
}


COMPATIBILITY_MODE = True  # the lesson folds the layer norms into the weights: conftest's `model` does too


@pytest.mark.parametrize("exercise", sorted(CASES))
def test_check_accepts_a_correct_solution_and_rejects_the_stub_and_each_mistake(exercise, prove_check):
    check, solution, wrong = CASES[exercise]
    prove_check(check, solution, wrong)


@pytest.mark.parametrize("exercise", sorted(MODEL_CASES))
def test_model_check_accepts_a_correct_solution_and_rejects_the_stub_and_mistakes(exercise, model, prove_check):
    check, solution, wrong = MODEL_CASES[exercise]
    prove_check(check, solution, wrong, model)


@pytest.mark.parametrize(
    "check,solution",
    [
        (c.check_exchange_names, exchange_names_through_a_placeholder),
        (c.check_rank_correlation, rank_correlation_from_one),
        (c.check_ablate_except, ablate_except_by_arithmetic),
    ],
)
def test_checks_accept_correct_solutions_written_another_way(check, solution, capsys):
    check(solution)
    assert "✓" in capsys.readouterr().out


def test_sweep_checks_accept_the_copies_laid_out_prompt_by_prompt(model, capsys):
    """``repeat_interleave`` is right when the hook and the metric read the rows the same way."""
    c.check_act_patch_by_position(_by_position(rows="interleave", view="batch", read="batch"), model)
    c.check_act_patch_heads(_heads(rows="interleave", view="batch", read="batch"), model)
    assert capsys.readouterr().out.count("✓") == 2


def test_the_names_checks_cases_tell_each_mistake_apart():
    """Each wrong way of exchanging names is matched by its own message, never by an earlier one's."""
    for k, (mistake, message) in enumerate(c._EXCHANGE_MISTAKES):
        outs = [mistake(*case) for case in c._EXCHANGE_CASES]
        assert outs != [c.exchange_names(*case) for case in c._EXCHANGE_CASES], k
        first = next(m for wrong, m in c._EXCHANGE_MISTAKES if [wrong(*case) for case in c._EXCHANGE_CASES] == outs)
        assert first == message, k


def test_the_checks_batched_references_agree_with_transformer_lens(model):
    """The sweep checks compare with TransformerLens's one-site-per-pass sweeps for one hook each and
    with their own batched sweep for the others; here the batched sweep meets TransformerLens's on those."""
    from transformer_lens import patching

    pairs, cache, metric = c._fresh(model)
    L, H, n_pos = model.cfg.n_layers, model.cfg.n_heads, pairs.clean.shape[1]
    every_position = torch.zeros(H, n_pos, H, dtype=torch.bool)
    every_position[torch.arange(H), :, torch.arange(H)] = True
    sweeps = {
        "attn_out": (patching.get_act_patch_attn_out, "blocks.{}.hook_attn_out", torch.eye(n_pos, dtype=torch.bool)),
        "mlp_out": (patching.get_act_patch_mlp_out, "blocks.{}.hook_mlp_out", torch.eye(n_pos, dtype=torch.bool)),
        "q": (patching.get_act_patch_attn_head_q_all_pos, "blocks.{}.attn.hook_q", every_position),
        "k": (patching.get_act_patch_attn_head_k_all_pos, "blocks.{}.attn.hook_k", every_position),
        "v": (patching.get_act_patch_attn_head_v_all_pos, "blocks.{}.attn.hook_v", every_position),
    }
    for what, (tl, name, mask) in sweeps.items():
        ours = c._sweep(model, pairs.corrupted, cache, [name.format(l) for l in range(L)], mask, metric)
        theirs = tl(model, pairs.corrupted, cache, metric).float().cpu()
        torch.testing.assert_close(ours, theirs, atol=1e-4, rtol=1e-3, msg=what)


def test_sweep_checks_run_transformer_lens_one_site_per_pass_for_one_hook_only(model, monkeypatch, capsys):
    """TransformerLens's sweeps run one forward pass per site: the checks call them once, not per hook."""
    from transformer_lens import patching

    def slow(*args, **kwargs):
        raise AssertionError("the check ran a second one-site-per-pass sweep")

    monkeypatch.setattr(c, "_REFERENCES", weakref.WeakKeyDictionary())
    for other in ("attn_out", "mlp_out", "attn_head_q_all_pos", "attn_head_k_all_pos", "attn_head_v_all_pos"):
        monkeypatch.setattr(patching, f"get_act_patch_{other}", slow)
    c.check_act_patch_by_position(act_patch_by_position, model)
    c.check_act_patch_heads(act_patch_heads, model)
    assert capsys.readouterr().out.count("✓") == 2


def test_model_checks_run_on_one_thread_and_give_the_learners_setting_back(model, capsys):
    from utils.checks import CheckFailed

    before = torch.get_num_threads()
    seen = []

    def heads(model, corrupted, clean_cache, metric, kind):
        seen.append(torch.get_num_threads())
        return act_patch_heads(model, corrupted, clean_cache, metric, kind)

    torch.set_num_threads(2)
    try:
        c.check_act_patch_heads(heads, model)
        assert torch.get_num_threads() == 2 and set(seen) == {1}
        with pytest.raises(CheckFailed):
            c.check_act_patch_heads(_whole_layer, model)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
