"""Steering vectors, the emotion circle, and what a steered continuation expresses.

A steering vector for an emotion is a difference of class means of the residual stream at the
subject's name (where the feeling can only come from context). Added at one stage of the
residual stream while a prompt that has not yet named a feeling is continued greedily, it
should make the continuation express that emotion; the generator's own scorer says exactly
which emotion each generated sentence expresses, and whether the text is still Storyworld.
"""

from __future__ import annotations

import math

import torch
from tqdm.auto import tqdm

from utils import seeds
from utils.corpora import storyworld
from utils.corpora.emotions import ANGLES, emotion_tokens, residual_stack, stage_names

N_EMOTIONS = len(storyworld.EMOTIONS)
STRENGTHS = (0.125, 0.25, 0.5, 1.0)  # in units of the mean residual norm at the stage
MIN_FLUENCY = 0.9  # the card's best setting keeps at least this share of continuations valid


def fisher_lee(a: torch.Tensor, b: torch.Tensor) -> float:
    """The Fisher–Lee circular correlation of two sets of angles in radians, ``[n]`` each: 1 when
    one set is the other rotated, −1 when mirrored, near 0 when unrelated."""
    i, j = torch.triu_indices(len(a), len(a), 1)
    x, z = torch.sin(a[i] - a[j]), torch.sin(b[i] - b[j])
    return float((x * z).sum() / (x.pow(2).sum() * z.pow(2).sum()).sqrt())


def class_means(x: torch.Tensor, y: torch.Tensor, n_classes: int = N_EMOTIONS) -> torch.Tensor:
    """Each class's mean row, ``[n_classes, d]``."""
    return torch.stack([x[y == k].mean(0) for k in range(n_classes)])


def steering_vector(x: torch.Tensor, y: torch.Tensor, target: int, n_classes: int = N_EMOTIONS) -> torch.Tensor:
    """The mean of ``target``'s rows minus the mean of the other classes' means (each class once), ``[d]``."""
    means = class_means(x, y, n_classes)
    others = torch.cat([means[:target], means[target + 1 :]])
    return means[target] - others.mean(0)


def circle_basis(directions: torch.Tensor, angles: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """An orthonormal pair ``(u, v)`` for the plane of the emotion circle: ``u`` along
    ``Σ cos θₖ dₖ`` (valence), ``v`` along ``Σ sin θₖ dₖ`` (arousal) with its part along ``u``
    removed (Gram–Schmidt). ``directions`` ``[12, d]``, ``angles`` ``[12]`` in radians."""
    u = (torch.cos(angles)[:, None] * directions).sum(0)
    u = u / u.norm()
    v = (torch.sin(angles)[:, None] * directions).sum(0)
    v = v - (v @ u) * u
    return u, v / v.norm()


def circle_geometry(means: torch.Tensor, angles: torch.Tensor = ANGLES) -> dict:
    """How well 12 class means ``[12, d]`` sit on a circle in the order of their true angles:
    their angles on the top two principal axes, the Fisher–Lee correlation with the true angles,
    how many emotions have their right neighbour next round the picture, and the share of the
    means' variance in those two axes."""
    centred = means - means.mean(0)
    _, s, vh = torch.linalg.svd(centred, full_matrices=False)
    xy = centred @ vh[:2].T
    picture = torch.atan2(xy[:, 1], xy[:, 0])
    order = picture.argsort()
    n = len(means)
    neighbours = sum(((order[(i + 1) % n] - order[i]) % n).item() in (1, n - 1) for i in range(n))
    return {
        "angles": picture,
        "correlation": fisher_lee(picture, angles),
        "neighbours": int(neighbours),
        "variance_in_two": float(s[:2].pow(2).sum() / s.pow(2).sum()),
    }


def decoded_angle(loglik: torch.Tensor, angles: torch.Tensor = ANGLES) -> torch.Tensor:
    """The feeling a continuation expresses, as an angle: the circular mean of the 12 emotions'
    angles weighted by their posterior ``softmax(loglik)`` (a uniform prior), ``[n]`` from
    ``loglik`` ``[n, 12]``. NaN for a row where no emotion fits (every entry ``-inf``)."""
    fits = torch.isfinite(loglik).any(-1)
    p = torch.where(fits[:, None], loglik, torch.zeros_like(loglik)).softmax(-1)
    out = torch.atan2(p @ torch.sin(angles), p @ torch.cos(angles))
    return torch.where(fits, out, torch.full_like(out, math.nan))


def kl_divergence(clean_logits: torch.Tensor, steered_logits: torch.Tensor) -> torch.Tensor:
    """KL(P_clean ‖ P_steered) of the next-token distributions at every position, ``[...]``
    from logits ``[..., d_vocab]``: how much the steered model's prediction moved away."""
    p = clean_logits.log_softmax(-1)
    q = steered_logits.log_softmax(-1)
    return (p.exp() * (p - q)).sum(-1)


def rates(readings, targets) -> tuple[float, float]:
    """(share of continuations that express their target emotion, share still Storyworld)."""
    n = len(readings)
    hit = sum(r.emotion == int(t) for r, t in zip(readings, targets)) / n
    return hit, sum(r.valid for r in readings) / n


# ---------------------------------------------------------------------------------------
# The model card's rows: the circle at the names, and steering on prompts that name no feeling


def name_directions(model, n_docs: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Class means at the subject's name tokens of ``n_docs`` narratives, at every stage
    (embeddings, then after each layer), and each stage's mean residual norm there:
    ``[stage, 12, d_model]`` and ``[stage]``."""
    data = emotion_tokens(model, n_docs, seed)
    x = residual_stack(model, data)
    names = data.role == 0
    means = torch.stack([class_means(x[s][names], data.label[names]) for s in range(len(x))])
    return means, x[:, names].norm(dim=-1).mean(-1)


def steering_card(model, train_seed: int = seeds.PROBE_TRAIN, prompt_seed: int = seeds.STEERING_PROMPTS,
                  n_docs: int = 400, n_prompts: int = 48, n_new: int = 10,
                  settings: list[tuple[int, float]] | None = None) -> dict:  # fmt: skip
    """The card's circle and steering numbers.

    *Circle*: the 12 class means at the names, at the stage whose Fisher–Lee correlation with the
    true angles is largest in size. *Steering*: every stage after a layer × ``STRENGTHS``, each
    prompt ("… Ann felt") steered to one emotion (the 12 in turn) with the difference of means at
    the names, scaled to the strength × the stage's mean residual norm, added at the prompt's
    positions; the best setting is the one with the most continuations expressing their target
    among those that keep ``MIN_FLUENCY`` of them valid. At that setting, steering along the
    circle (12 angles × the prompts) gives the Fisher–Lee correlation between the angle steered
    to and the angle the continuation expresses. ``settings`` limits the sweep to these
    ``(stage, strength)`` pairs (a re-measurement of a card's chosen setting)."""
    from utils.interventions.steering import generate, steering_hook, story_prompts

    means, norms = name_directions(model, n_docs, train_seed)
    geometry = [circle_geometry(m) for m in means]
    best_circle = max(range(len(means)), key=lambda s: abs(geometry[s]["correlation"]))
    names = stage_names(model.cfg.n_layers)
    prompts = story_prompts(n_prompts, prompt_seed, named=False)
    targets = torch.arange(n_prompts) % N_EMOTIONS
    sweep = {}
    for stage, c in tqdm(settings or [(s, c) for s in range(1, len(means)) for c in STRENGTHS], desc="steering sweep",
                         leave=False):  # fmt: skip
        directions = means[stage] - means[stage].mean(0)
        unit = directions / directions.norm(dim=-1, keepdim=True)
        hook = steering_hook(names[stage], unit[targets] * c * norms[stage])
        sweep[stage, c] = rates(generate(model, prompts, n_new, hooks=[hook]), targets)
    fluent = [k for k, (_, valid) in sweep.items() if valid >= MIN_FLUENCY] or list(sweep)
    stage, c = max(fluent, key=lambda k: (sweep[k][0], -k[1]))
    u, v = circle_basis(means[stage] - means[stage].mean(0), ANGLES)
    theta = ANGLES.repeat(n_prompts)  # 12 angles for each prompt
    vectors = (torch.cos(theta)[:, None] * u + torch.sin(theta)[:, None] * v) * c * norms[stage]
    readings = generate(
        model, [p for p in prompts for _ in ANGLES], n_new, hooks=[steering_hook(names[stage], vectors)]
    )
    decoded = decoded_angle(torch.tensor([r.total for r in readings]))
    ok = ~decoded.isnan()
    return {
        "emotion_circle_stage": best_circle,
        "emotion_circle_correlation": abs(geometry[best_circle]["correlation"]),  # a mirrored picture is as good
        "emotion_circle_neighbours": geometry[best_circle]["neighbours"],
        "emotion_circle_variance_in_two": geometry[best_circle]["variance_in_two"],
        "steering_stage": stage,
        "steering_strength": c,
        "steering_target_rate": sweep[stage, c][0],
        "steering_fluency": sweep[stage, c][1],
        "steering_prompts": n_prompts,
        "steering_sweep": {f"{s}/{k}": list(v) for (s, k), v in sweep.items()},
        "steering_circle_correlation": fisher_lee(theta[ok], decoded[ok]),
        "steering_circle_decoded": float(ok.float().mean()),
    }


# ---------------------------------------------------------------------------------------
# One vector, read at the next token: cheap enough for a large model's card


def happy_sad_steering(
    model,
    train_seed: int = seeds.PROBE_TRAIN,
    prompt_seed: int = seeds.STEERING_PROMPTS,
    n_docs: int = 96,
    n_prompts: int = 24,
    stages: list[int] | None = None,
    strength: float = STRENGTHS[1],
    random_seed: int = 0,
) -> dict:
    """Steering with a happy-minus-sad vector, read at the next token instead of by generation.

    The vector at a stage is the mean of the residual stream at the subject's name in "happy"
    sentences minus its mean in "sad" ones (:func:`name_directions` on ``n_docs`` narratives of
    ``train_seed``), rescaled to ``strength`` × the stream's mean norm at the names there. It is added
    at every position after BOS of ``n_prompts`` prompts cut before a story names its first feeling
    ("… Ann felt", stream ``prompt_seed``), and the next token's log-odds
    ``log p(" happy") − log p(" sad")`` is read: its mean shift from the unsteered run with the
    vector (``plus``), with minus the vector (``minus``), and with a random direction of the same
    norm (``random``, the control; the same direction at a stage whatever the sweep). ``stages``
    (default every third stage after a layer, the last included) are swept; the best is the one
    where the vector moves the log-odds furthest beyond what the random direction does,
    ``(plus − minus) / 2 − |random|`` (after the last layer any direction moves the logits), and
    the next-token probabilities of " happy" and " sad" are given there with and without the
    vector. Every word is the model's own token; a tokenizer that cuts " happy" or " sad" is refused."""
    from utils.corpora.tokenizer import word_id
    from utils.interventions.steering import prompt_tokens, steering_hook, story_prompts
    from utils.metrics.common import tokenizer_of

    tok = tokenizer_of(model)
    happy, sad = word_id("happy", tok), word_id("sad", tok)
    h, s = storyworld.EMOTIONS.index("happy"), storyworld.EMOTIONS.index("sad")
    means, norms = name_directions(model, n_docs, train_seed)
    if means[:, [h, s]].isnan().any():
        raise ValueError(f"no name in a happy or in a sad sentence of the {n_docs} narratives: draw more")
    names = stage_names(model.cfg.n_layers)
    stages = stages or list(range(len(names) - 1, 0, -3))[::-1]
    ids = prompt_tokens(model, story_prompts(n_prompts, prompt_seed, named=False))
    device = next(model.parameters()).device
    groups: dict[int, list[int]] = {}
    for i, r in enumerate(ids):
        groups.setdefault(len(r), []).append(i)

    def next_logprobs(hooks=()) -> torch.Tensor:  # [prompt, 2]: log p(" happy"), log p(" sad") next
        out = torch.zeros(len(ids), 2)
        for n, idx in groups.items():
            x = torch.tensor([ids[i] for i in idx], device=device)
            with torch.no_grad(), model.hooks(fwd_hooks=[hook(n, idx) for hook in hooks]):
                last = model(x, logits_to_keep=1)[:, -1]  # the last position alone unembedded: the same numbers
                out[idx] = last.float().log_softmax(-1)[:, [happy, sad]].cpu()
        return out

    def log_odds(lp: torch.Tensor) -> torch.Tensor:
        return lp[:, 0] - lp[:, 1]

    clean = next_logprobs()
    sweep, steered = {}, {}
    for stage in stages:
        v = means[stage, h] - means[stage, s]
        v = v / v.norm() * strength * norms[stage]
        r = torch.randn(v.shape, generator=torch.Generator().manual_seed(random_seed + stage))  # one per stage
        r = r / r.norm() * v.norm()
        runs = {
            k: next_logprobs([steering_hook(names[stage], vec)])
            for k, vec in (("plus", v), ("minus", -v), ("random", r))
        }
        steered[stage] = runs["plus"]
        sweep[stage] = {k: (log_odds(lp) - log_odds(clean)).mean().item() for k, lp in runs.items()}
    best = max(stages, key=lambda k: (sweep[k]["plus"] - sweep[k]["minus"]) / 2 - abs(sweep[k]["random"]))
    return {
        "steering_stage": best,
        "steering_strength": strength,
        "steering_shift_plus": sweep[best]["plus"],
        "steering_shift_minus": sweep[best]["minus"],
        "steering_shift_random": sweep[best]["random"],
        "steering_p_happy_clean": clean[:, 0].exp().mean().item(),
        "steering_p_sad_clean": clean[:, 1].exp().mean().item(),
        "steering_p_happy_steered": steered[best][:, 0].exp().mean().item(),
        "steering_p_sad_steered": steered[best][:, 1].exp().mean().item(),
        "steering_sweep": {str(k): v for k, v in sweep.items()},
        "steering_prompts": n_prompts,
        "steering_docs": n_docs,
    }
