"""Toy models of superposition, and what is measured on them.

The toy model (Elhage et al. 2022) squeezes ``n`` features through ``m < n`` hidden dimensions and
back: ``h = W x`` and ``x̂ = ReLU(Wᵀ h + b)``, with ``W`` ``[m, n]`` (column ``i`` is feature ``i``'s
direction in the hidden space) and ``b`` ``[n]``. Each feature is zero with probability ``S`` (its
*sparsity*) and otherwise uniform on [0, 1]; the loss weighs each feature's squared error by its
*importance*. Many such models, *instances*, train at once as one batched model: every tensor here
has the instance as its first dimension (``W``: ``[instance, m, n]``), and the instances differ only
in their sparsity, their importances and their starting weights.

A *privileged basis* variant puts a ReLU on the hidden layer (``h = ReLU(W x)``), so that the hidden
dimensions become neurons whose own directions matter.

Conventions: ``x`` is ``[instance, batch, n]``; a feature is *represented* when its column of ``W``
is longer than ``REPRESENTED`` (a represented feature's column settles near length 1, a dropped
one near 0).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch

REPRESENTED = 0.5  # a feature whose column of W is longer than this is represented


@contextmanager
def one_thread() -> Iterator[None]:
    """Run torch on one thread inside the block. A toy model's tensors are too small to gain from more, and on a
    busy machine threads that wait on each other made a training loop ten times slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def on_one_thread(fn: Callable) -> Callable:
    """``fn`` run inside :func:`one_thread` (a training loop, the learner's or the course's)."""

    def run(*args, **kwargs):
        with one_thread():
            return fn(*args, **kwargs)

    run.__name__ = getattr(fn, "__name__", "run")
    return run


def describe_2d(w: torch.Tensor) -> str:
    """What a model's ``W`` ``[m, n]`` does with each feature, in words: the features with a direction of their own
    (column longer than ``REPRESENTED`` and ``D_i`` above 0.9), those longer than ``REPRESENTED`` that share their
    direction with others (``D_i`` 0.9 or less: superposition, or a projection that gives no feature a direction of
    its own), and the rest, stored weakly or dropped."""
    norms = w.norm(dim=0)
    d = feature_dimensionality(w[None])[0]
    own = ((norms > REPRESENTED) & (d > 0.9)).nonzero().flatten().tolist()
    shared = ((norms > REPRESENTED) & (d <= 0.9)).nonzero().flatten().tolist()
    rest = (norms <= REPRESENTED).nonzero().flatten().tolist()
    first = f"features {own} have a direction of their own" if own else "no feature has a direction of its own"
    return f"{first}; {shared or 'none'} share directions (longer than {REPRESENTED}); {rest or 'none'} are shorter"


# ---------------------------------------------------------------------------------------------
# The model


def sample_features(sparsity: torch.Tensor, n_features: int, batch: int, generator: torch.Generator) -> torch.Tensor:
    """Feature values ``[instance, batch, n_features]``: each zero with probability ``sparsity[instance]``
    (``[instance]``, or ``[instance, n_features]`` for a sparsity per feature), otherwise uniform on [0, 1]."""
    p = (1 - sparsity).reshape(len(sparsity), 1, -1)  # chance of being active, [instance, 1, n or 1]
    u = torch.rand(len(sparsity), batch, n_features, generator=generator)
    return torch.where(u < p, u / p, torch.zeros(())).clamp(max=1.0)  # given u < p, u / p is uniform on [0, 1)


def correlated_features(
    sparsity: torch.Tensor, n_features: int, batch: int, generator: torch.Generator
) -> torch.Tensor:
    """As :func:`sample_features`, but feature 1 is active exactly when feature 0 is (a value of its own, uniform on
    [0, 1]): the two share their on/off mask."""
    x = sample_features(sparsity, n_features, batch, generator)
    values = torch.rand(len(sparsity), batch, generator=generator)
    x[:, :, 1] = torch.where(x[:, :, 0] > 0, values, torch.zeros(()))
    return x


def init_toy(instances: int, n_features: int, d_hidden: int, generator: torch.Generator):
    """Starting weights: ``W`` ``[instance, d_hidden, n_features]`` Xavier-normal; ``b`` ``[instance, n_features]``,
    zero."""
    std = math.sqrt(2 / (n_features + d_hidden))
    W = torch.randn(instances, d_hidden, n_features, generator=generator) * std
    return W, torch.zeros(instances, n_features)


def toy_forward(
    W: torch.Tensor, b: torch.Tensor, x: torch.Tensor, relu_hidden: bool = False, linear: bool = False
) -> torch.Tensor:
    """The reconstruction ``x̂ = ReLU(Wᵀ W x + b)``, ``[instance, batch, n]`` (with ``relu_hidden``,
    ``ReLU(Wᵀ ReLU(W x) + b)``; with ``linear``, no ReLU on the output: ``Wᵀ W x + b``, the paper's control)."""
    h = torch.einsum("imn,ibn->ibm", W, x)
    if relu_hidden:
        h = torch.relu(h)
    out = torch.einsum("imn,ibm->ibn", W, h) + b[:, None, :]
    return out if linear else torch.relu(out)


def toy_loss(x: torch.Tensor, x_hat: torch.Tensor, importance: torch.Tensor) -> torch.Tensor:
    """Importance-weighted squared error, ``[instance]``: summed over features, averaged over the batch
    (``importance``: ``[instance, n]``)."""
    return ((x - x_hat).pow(2) * importance[:, None, :]).sum(-1).mean(-1)


def toy_forward_and_loss(
    W: torch.Tensor, b: torch.Tensor, x: torch.Tensor, importance: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(x̂ [instance, batch, n], loss [instance])`` of the toy model: what :func:`train_toy` calls each step."""
    x_hat = toy_forward(W, b, x)
    return x_hat, toy_loss(x, x_hat, importance)


Forward = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


def forward_variant(
    relu_hidden: bool = False, linear: bool = False, bias: bool = True, forward: Forward | None = None
) -> Forward:
    """A forward-and-loss function for a variant of the toy model: ``relu_hidden`` (neurons), ``linear`` (no ReLU
    on the output) or without ``bias`` (``b`` read as zero, so it gets no gradient and stays at its start, zero).
    ``forward`` is the plain model to leave the bias out of (default :func:`toy_forward_and_loss`)."""
    if relu_hidden or linear:
        if forward is not None:
            raise ValueError("forward is only for the bias variant")

        def variant(W, b, x, importance):
            x_hat = toy_forward(W, b if bias else torch.zeros_like(b), x, relu_hidden, linear)
            return x_hat, toy_loss(x, x_hat, importance)

        return variant
    base = forward or toy_forward_and_loss
    if bias:
        return base
    return lambda W, b, x, importance: base(W, torch.zeros_like(b), x, importance)


def train_toy(
    sparsity: torch.Tensor,
    importance: torch.Tensor,
    d_hidden: int,
    forward: Forward = toy_forward_and_loss,
    sample: Callable[[torch.Tensor, int, int, torch.Generator], torch.Tensor] = sample_features,
    *,
    steps: int = 3000,
    batch: int = 1024,
    lr: float = 1e-2,
    seed: int = 0,
    init: torch.Tensor | None = None,
    relu_hidden: bool = False,
    linear: bool = False,
    bias: bool = True,
    progress: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Train one toy model per row of ``sparsity`` (``[instance]``) and ``importance`` (``[instance, n]``),
    all at once, with Adam on the sum of the instances' losses; returns ``W`` ``[instance, d_hidden, n]`` and ``b``
    ``[instance, n]``. ``forward(W, b, x, importance)`` gives ``(x̂, loss [instance])`` and ``sample(sparsity, n,
    batch, generator)`` a batch of features; both draw nothing but from the one generator, seeded with ``seed``,
    which first gives the starting weights (:func:`init_toy`). ``init`` (``[instance, d_hidden, n]``) replaces the
    random starting ``W``. ``relu_hidden``, ``linear`` and ``bias`` choose a variant (:func:`forward_variant`)."""
    if relu_hidden or linear or not bias:
        forward = forward_variant(relu_hidden, linear, bias, None if relu_hidden or linear else forward)
    generator = torch.Generator().manual_seed(seed)
    W, b = init_toy(len(sparsity), importance.shape[-1], d_hidden, generator)
    if init is not None:
        W = init.clone().float()
    W.requires_grad_(True)
    b.requires_grad_(True)
    opt = torch.optim.Adam([W, b], lr=lr)
    loop = range(steps)
    if progress:
        from tqdm.auto import tqdm

        loop = tqdm(loop, desc=f"{len(sparsity)} toy models", unit="step", mininterval=1.0)
    with torch.enable_grad(), one_thread():
        for _ in loop:
            x = sample(sparsity, importance.shape[-1], batch, generator)
            _, loss = forward(W, b, x, importance)
            opt.zero_grad()
            loss.sum().backward()
            opt.step()
    return W.detach(), b.detach()


def eval_loss(
    W: torch.Tensor,
    b: torch.Tensor,
    sparsity: torch.Tensor,
    importance: torch.Tensor,
    *,
    batch: int = 50_000,
    seed: int = 1,
    relu_hidden: bool = False,
    linear: bool = False,
    forward: Forward | None = None,
) -> torch.Tensor:
    """Each instance's loss ``[instance]`` on a fresh batch of ``batch`` inputs drawn from ``seed``. Each instance
    gets a batch of its own (:func:`sample_features` draws one per instance), so two instances are never scored on
    the same inputs: a difference smaller than the spread of one instance's loss from batch to batch does not rank
    them."""
    x = sample_features(sparsity, W.shape[-1], batch, torch.Generator().manual_seed(seed))
    if forward is not None:
        with torch.no_grad():
            return forward(W, b, x, importance)[1].detach().reshape(len(W))
    return toy_loss(x, toy_forward(W, b, x, relu_hidden, linear), importance)


# ---------------------------------------------------------------------------------------------
# What the weights show


def feature_norms(W: torch.Tensor) -> torch.Tensor:
    """Length of each feature's direction ``‖W_i‖``, ``[instance, n]``."""
    return W.norm(dim=-2)


def represented(W: torch.Tensor, threshold: float = REPRESENTED) -> torch.Tensor:
    """Which features the model keeps, ``[instance, n]`` booleans."""
    return feature_norms(W) > threshold


def interference(W: torch.Tensor) -> torch.Tensor:
    """How much of the other features lands on each feature's direction: ``Σ_{j≠i} (Ŵ_i · W_j)²``,
    ``[instance, n]`` (zero when feature ``i`` has a dimension to itself)."""
    unit = W / W.norm(dim=-2, keepdim=True).clamp_min(1e-8)
    overlap = torch.einsum("imn,imk->ink", unit, W).pow(2)  # [instance, n, n]: (Ŵ_i · W_j)²
    return overlap.sum(-1) - overlap.diagonal(dim1=-2, dim2=-1)


def feature_dimensionality(W: torch.Tensor) -> torch.Tensor:
    """The share of a dimension each feature gets, ``D_i = ‖W_i‖² / Σ_j (Ŵ_i · W_j)²``, ``[instance, n]``:
    1 for a dimension of its own, 1/2 for one side of an antipodal pair, 2/5 for a corner of a pentagon
    in a plane, 0 for a dropped feature."""
    unit = W / W.norm(dim=-2, keepdim=True).clamp_min(1e-8)
    total = torch.einsum("imn,imk->ink", unit, W).pow(2).sum(-1)
    return W.pow(2).sum(-2) / total.clamp_min(1e-12)


def dimensions_per_feature(W: torch.Tensor) -> torch.Tensor:
    """``D* = m / ‖W‖²_F``, ``[instance]``: the hidden dimensions the model spends per feature it
    stores (about ``m / (number of features kept)`` when the kept ones have length 1)."""
    return W.shape[-2] / W.pow(2).sum((-2, -1))


def angles_2d(W: torch.Tensor) -> torch.Tensor:
    """Each feature's angle in degrees, in [0, 360), for models with two hidden dimensions: ``[instance, n]``."""
    return torch.rad2deg(torch.atan2(W[..., 1, :], W[..., 0, :])) % 360


def pair_angle(W: torch.Tensor, i: int, j: int) -> torch.Tensor:
    """The angle in degrees between features ``i`` and ``j``'s columns of ``W`` ``[instance, m, n]``: ``[instance]``."""
    cos = torch.nn.functional.cosine_similarity(W[:, :, i], W[:, :, j], dim=1)
    return torch.rad2deg(torch.arccos(cos.clamp(-1.0, 1.0)))


def polygon_gaps(W: torch.Tensor) -> list[torch.Tensor]:
    """For each instance of a two-dimensional model, the angles in degrees between neighbouring represented
    features, going round the circle (``k`` gaps summing to 360 for ``k`` represented features)."""
    out = []
    for w, keep in zip(W, represented(W)):
        a = angles_2d(w[None])[0][keep].sort().values
        out.append(torch.diff(torch.cat([a, a[:1] + 360])) if len(a) else a)
    return out


def phase(w: torch.Tensor) -> str:
    """How a model with two features in one dimension (``w``: ``[2]``, the two features' weights) stores
    them: ``"first only"``, ``"second only"``, ``"both"`` (in superposition: opposite signs, an antipodal
    pair) or ``"neither"``."""
    kept = w.abs() > REPRESENTED
    if kept.all():
        return "both" if w[0] * w[1] < 0 else "both, same side"
    if kept[0]:
        return "first only"
    return "second only" if kept[1] else "neither"


# ---------------------------------------------------------------------------------------------
# Neurons (the privileged basis)


def neuron_feature_weights(W: torch.Tensor) -> torch.Tensor:
    """How strongly each neuron reads each feature, ``|W|`` ``[instance, neuron, n]``, with dropped features
    (not represented) set to zero."""
    return W.abs() * represented(W)[:, None, :]


def neuron_top_share(W: torch.Tensor) -> torch.Tensor:
    """For each neuron, the share of its squared weights on the represented features that goes to its largest
    one, ``[instance, neuron]``: 1 for a neuron that reads one feature (monosemantic), about ``1/k`` for one that
    reads ``k`` features equally (polysemantic), 0 for a neuron that reads none."""
    w2 = neuron_feature_weights(W).pow(2)
    total = w2.sum(-1)
    return torch.where(total > 1e-9, w2.max(-1).values / total.clamp_min(1e-9), torch.zeros_like(total))


MONOSEMANTIC = 0.9  # a neuron whose largest feature holds at least this share of its squared weights


# ---------------------------------------------------------------------------------------------
# Computing in superposition: the absolute-value model

COMPUTED = 0.5  # a half of |x_i| is computed when x_i = ±1 alone moves output i by at least this much


def signed_features(sparsity: torch.Tensor, n_features: int, batch: int, generator: torch.Generator) -> torch.Tensor:
    """Feature values ``[instance, batch, n_features]``: each zero with probability ``sparsity[instance]``,
    otherwise uniform on [-1, 1] (the absolute-value model's inputs)."""
    on = torch.rand(len(sparsity), batch, n_features, generator=generator) >= sparsity[:, None, None]
    return on * (2 * torch.rand(len(sparsity), batch, n_features, generator=generator) - 1)


def abs_forward(W_in: torch.Tensor, W_out: torch.Tensor, b: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """The absolute-value model's output ``y = ReLU(W_out ReLU(W_in x) + b)`` ``[instance, batch, n]``, for
    ``W_in`` ``[instance, m, n]``, ``W_out`` ``[instance, n, m]``, ``b`` ``[instance, n]``."""
    h = torch.relu(torch.einsum("imn,ibn->ibm", W_in, x))
    return torch.relu(torch.einsum("inm,ibm->ibn", W_out, h) + b[:, None, :])


def abs_forward_and_loss(
    W_in: torch.Tensor, W_out: torch.Tensor, b: torch.Tensor, x: torch.Tensor, importance: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(y [instance, batch, n], loss [instance])``: the model's output and its importance-weighted squared error
    against the target ``|x|``, summed over features and averaged over the batch."""
    y = abs_forward(W_in, W_out, b, x)
    return y, toy_loss(x.abs(), y, importance)


def train_abs(
    sparsity: torch.Tensor,
    importance: torch.Tensor,
    d_mlp: int,
    forward: Callable = abs_forward_and_loss,
    sample: Callable[[torch.Tensor, int, int, torch.Generator], torch.Tensor] = signed_features,
    *,
    steps: int = 3000,
    batch: int = 1024,
    lr: float = 1e-2,
    seed: int = 0,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Train one absolute-value model per row of ``sparsity`` and ``importance`` ``[instance, n]`` at once, with
    Adam on the sum of ``forward(W_in, W_out, b, x, importance)[1]``; returns ``(W_in [instance, d_mlp, n],
    W_out [instance, n, d_mlp], b [instance, n])``. The generator, seeded with ``seed``, draws the starting
    weights (Xavier-normal, the bias zero) and then every batch ``sample(sparsity, n, batch, generator)``."""
    instances, n = importance.shape
    generator = torch.Generator().manual_seed(seed)
    W_in, b = init_toy(instances, n, d_mlp, generator)  # Xavier-normal [instance, d_mlp, n], the bias zero
    W_out = torch.randn(instances, n, d_mlp, generator=generator) * math.sqrt(2 / (n + d_mlp))
    params = [W_in, W_out, b]
    for p in params:
        p.requires_grad_(True)
    optimiser = torch.optim.Adam(params, lr=lr)
    with torch.enable_grad(), one_thread():
        for _ in range(steps):
            loss = forward(W_in, W_out, b, sample(sparsity, n, batch, generator), importance)[1].sum()
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
    for p in params:
        p.requires_grad_(False)
    return W_in, W_out, b


def abs_eval_loss(
    W_in: torch.Tensor, W_out: torch.Tensor, b: torch.Tensor, sparsity: torch.Tensor, importance: torch.Tensor,
    *, batch: int = 50_000, seed: int = 1,
) -> torch.Tensor:  # fmt: skip
    """Each instance's loss ``[instance]`` on a fresh batch of its own."""
    x = signed_features(sparsity, W_in.shape[-1], batch, torch.Generator().manual_seed(seed))
    return abs_forward_and_loss(W_in, W_out, b, x, importance)[1]


def half_responses(W_in: torch.Tensor, W_out: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """How far output ``i`` moves when ``x_i`` alone is +1 and when it is -1, from where it sits with every input
    zero: ``[instance, 2 (plus, minus), n]``. A model that computes ``|x_i|`` moves it by 1 both ways; one neuron,
    ``ReLU(x_i)`` or ``ReLU(-x_i)``, computes one half."""
    instances, n = b.shape
    rest = abs_forward(W_in, W_out, b, torch.zeros(instances, 1, n))  # [instance, 1, n]
    alone = torch.eye(n)[None].expand(instances, n, n)
    moves = [(abs_forward(W_in, W_out, b, s * alone) - rest).diagonal(dim1=1, dim2=2) for s in (1.0, -1.0)]
    return torch.stack(moves, 1)


def two_neurons_each(
    n_features: int, d_mlp: int, sparsity: float = 0.0
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A hand-built absolute-value model with no superposition, a batch of one: neurons ``2j`` and ``2j + 1`` read
    ``+x_j`` and ``-x_j`` and both write 1 to output ``j``, for the ``d_mlp // 2`` first features; every other output
    is its bias, the mean of ``|x_j|`` at this ``sparsity``, ``(1 - sparsity) / 2``, the best constant. It computes
    those features' ``|x_j|`` exactly and guesses the rest."""
    W_in, W_out = torch.zeros(1, d_mlp, n_features), torch.zeros(1, n_features, d_mlp)
    b = torch.full((1, n_features), (1 - sparsity) / 2)
    for j in range(d_mlp // 2):
        W_in[0, 2 * j, j], W_in[0, 2 * j + 1, j] = 1.0, -1.0
        W_out[0, j, 2 * j] = W_out[0, j, 2 * j + 1] = 1.0
        b[0, j] = 0.0
    return W_in, W_out, b


def neuron_read_share(W_in: torch.Tensor) -> torch.Tensor:
    """For each neuron of an absolute-value model, the share of its squared input weights on its largest feature,
    ``[instance, neuron]`` (every feature counted: this model has no columns to call represented or dropped)."""
    w2 = W_in.pow(2)
    return w2.max(-1).values / w2.sum(-1).clamp_min(1e-12)


# ---------------------------------------------------------------------------------------------
# Scoring a dictionary (an SAE's decoder) against known feature directions


def max_cosines(found: torch.Tensor, truth: torch.Tensor) -> torch.Tensor:
    """For each true direction (``truth`` ``[n, d]``), its largest cosine with any found direction
    (``found`` ``[k, d]``): ``[n]``."""
    f = found / found.norm(dim=-1, keepdim=True).clamp_min(1e-8)
    t = truth / truth.norm(dim=-1, keepdim=True).clamp_min(1e-8)
    return (t @ f.T).max(-1).values


def mean_max_cosine(found: torch.Tensor, truth: torch.Tensor) -> float:
    """Mean over the true directions of their best cosine with a found one (1: every feature found)."""
    return max_cosines(found, truth).mean().item()


# ---------------------------------------------------------------------------------------------
# Toy sparse autoencoders, many trained at once on the same data


@dataclass
class ToySAE:
    """Sparse autoencoders, one per instance: ``latents = act(x W_enc + b_enc)``, ``x̂ = latents W_dec + b_dec``,
    with ``act`` ReLU (``k`` is None, trained with an L1 penalty) or the ``k`` largest pre-activations kept."""

    W_enc: torch.Tensor  # [instance, d_in, d_sae]
    b_enc: torch.Tensor  # [instance, d_sae]
    W_dec: torch.Tensor  # [instance, d_sae, d_in]
    b_dec: torch.Tensor  # [instance, d_in]
    k: list[int] | None = None  # TopK: latents kept per input, per instance
    resampled: list[list[int]] | None = None  # per instance, the latents resampled at each resampling, if any


def sae_latents(sae: ToySAE, x: torch.Tensor) -> torch.Tensor:
    """Latent activations ``[instance, batch, d_sae]`` for inputs ``x`` ``[batch, d_in]`` (the same for every
    instance)."""
    pre = torch.einsum("bd,ids->ibs", x, sae.W_enc) - torch.einsum("id,ids->is", sae.b_dec, sae.W_enc)[:, None]
    pre = torch.relu(pre + sae.b_enc[:, None, :])
    if sae.k is None:
        return pre
    top = pre.topk(max(sae.k), dim=-1)  # the largest pre-activations, largest first
    kept = top.values * (torch.arange(max(sae.k)) < torch.tensor(sae.k)[:, None])[:, None, :]
    return torch.zeros_like(pre).scatter(-1, top.indices, kept)


def sae_reconstruct(sae: ToySAE, latents: torch.Tensor) -> torch.Tensor:
    """``x̂`` ``[instance, batch, d_in]`` from latents ``[instance, batch, d_sae]``."""
    return torch.einsum("ibs,isd->ibd", latents, sae.W_dec) + sae.b_dec[:, None, :]


def sae_loss(sae: ToySAE, x: torch.Tensor, l1: torch.Tensor) -> torch.Tensor:
    """Each SAE's loss ``[instance]`` on inputs ``x`` ``[batch, d_in]``: the squared error of its reconstruction,
    summed over the dimensions and averaged over the batch, plus ``l1[instance]`` times its latents weighed by their
    decoder rows' lengths (summed over the latents, averaged over the batch), so that shrinking the decoder cannot
    dodge the penalty."""
    z = sae_latents(sae, x)
    mse = (sae_reconstruct(sae, z) - x).pow(2).sum(-1).mean(-1)  # [instance]
    penalty = (z * sae.W_dec.norm(dim=-1)[:, None, :]).sum(-1).mean(-1)
    return mse + l1 * penalty


def train_toy_saes(
    sample: Callable[[int, torch.Generator], torch.Tensor],
    d_in: int,
    d_sae: int,
    loss: Callable[[ToySAE, torch.Tensor, torch.Tensor], torch.Tensor] = sae_loss,
    *,
    l1: list[float] | None = None,
    k: list[int] | None = None,
    steps: int = 3000,
    batch: int = 1024,
    lr: float = 3e-3,
    seed: int = 0,
    progress: bool = False,
    resample_at: tuple[int, ...] = (),
) -> ToySAE:
    """Train one SAE per L1 coefficient in ``l1`` (ReLU latents) or per ``k`` in ``k`` (TopK latents, no penalty),
    all on the same batches ``sample(batch, generator)`` ``[batch, d_in]``, with Adam on the sum of their
    ``loss(sae, x, l1 [instance])``. The generator, seeded with ``seed``, first draws the decoder's rows, random
    unit vectors (``[instance, d_sae, d_in]``); the encoder starts as their transpose, the biases at zero. After
    each step counted in ``resample_at``, the dead latents are resampled (:func:`resample_dead`) from a generator of
    their own (seeded with ``seed + 1``), so that the training batches are the same with or without resampling; the
    counts are kept in ``sae.resampled`` (one list per instance)."""
    if (l1 is None) == (k is None):
        raise ValueError("give either l1 (one coefficient per SAE) or k (one TopK size per SAE)")
    n = len(l1 if l1 is not None else k)
    generator = torch.Generator().manual_seed(seed)
    W_dec = torch.nn.functional.normalize(torch.randn(n, d_sae, d_in, generator=generator), dim=-1)
    sae = ToySAE(W_dec.transpose(1, 2).clone(), torch.zeros(n, d_sae), W_dec, torch.zeros(n, d_in), k)
    params = [sae.W_enc, sae.b_enc, sae.W_dec, sae.b_dec]
    for p in params:
        p.requires_grad_(True)
    coef = torch.tensor(l1 if l1 is not None else [0.0] * n)
    opt = torch.optim.Adam(params, lr=lr)
    loop = range(steps)
    if progress:
        from tqdm.auto import tqdm

        loop = tqdm(loop, desc=f"{n} SAEs", unit="step", mininterval=1.0)
    counts = []
    resampler = torch.Generator().manual_seed(seed + 1)  # its own draws: the training batches stay the same
    with torch.enable_grad(), one_thread():
        for step in loop:
            x = sample(batch, generator)
            total = loss(sae, x, coef).sum()
            opt.zero_grad()
            total.backward()
            opt.step()
            if step + 1 in resample_at:
                with torch.no_grad():
                    counts.append(resample_dead(sae, sample(RESAMPLE_INPUTS, resampler), opt, resampler).tolist())
    for p in params:
        p.requires_grad_(False)
    if resample_at:
        sae.resampled = [list(c) for c in zip(*counts)]
    return sae


RESAMPLE_INPUTS = 8192  # the fresh inputs a latent must fire on at least once to count as alive when resampling


def resample_dead(
    sae: ToySAE, x: torch.Tensor, optimiser: torch.optim.Adam, generator: torch.Generator
) -> torch.Tensor:
    """Give each latent that fires on none of the inputs ``x`` ``[batch, d_in]`` a new start, in place, after
    Bricken et al. (2023) in a simpler form: its decoder row becomes the unit direction of an input drawn with
    probability proportional to the SAE's squared error on it (an input the SAE reconstructs badly, less ``b_dec``),
    its encoder column the same direction, its encoder bias zero, and Adam's running moments for those weights zero.
    Returns how many latents each SAE resampled, ``[instance]``. (Bricken et al. call a latent dead after a window
    of training steps and scale the new encoder column to a fifth of the live ones' mean length.)"""
    z = sae_latents(sae, x)  # [instance, batch, d_sae]
    error = (sae_reconstruct(sae, z) - x).pow(2).sum(-1)  # [instance, batch]
    counts = []
    for i in range(len(sae.W_dec)):
        dead = ((z[i] > 0).sum(0) == 0).nonzero().flatten()
        counts.append(len(dead))
        if len(dead) == 0:
            continue
        picked = torch.multinomial(error[i] + 1e-12, len(dead), replacement=len(dead) > len(x), generator=generator)
        direction = torch.nn.functional.normalize(x[picked] - sae.b_dec[i], dim=-1)  # [dead, d_in]
        sae.W_dec[i, dead] = direction
        sae.W_enc[i][:, dead] = direction.T
        sae.b_enc[i, dead] = 0.0
        for param, rows in ((sae.W_dec, (i, dead)), (sae.b_enc, (i, dead))):
            for moment in ("exp_avg", "exp_avg_sq"):
                optimiser.state[param][moment][rows] = 0.0
        for moment in ("exp_avg", "exp_avg_sq"):
            optimiser.state[sae.W_enc][moment][i][:, dead] = 0.0
    return torch.tensor(counts)


def score_saes(saes: dict[str, ToySAE], h: torch.Tensor, truth: torch.Tensor) -> dict[str, dict[str, float | int]]:
    """For each SAE of ``{label: sae}`` (a batch of one each), scored against the true directions ``truth`` ``[n, d]``
    on inputs ``h`` ``[batch, d]``: ``{"mmc": mean max cosine of its decoder rows, "found": the features with a row at
    cosine 0.9 or more, "L0": the latents active per input}``."""
    scores = {}
    for label, sae in saes.items():
        rows = sae.W_dec[0]
        scores[label] = {
            "mmc": mean_max_cosine(rows, truth),
            "found": int((max_cosines(rows, truth) >= 0.9).sum()),
            "L0": (sae_latents(sae, h) > 0).float().sum(-1).mean().item(),
        }
    return scores


def dead_latents(latents: torch.Tensor) -> torch.Tensor:
    """How many latents never fire on these inputs, ``[instance]`` (``latents``: ``[instance, batch, d_sae]``)."""
    return ((latents > 0).sum(1) == 0).sum(-1)


def one_sae(sae: ToySAE, i: int) -> ToySAE:
    """Instance ``i`` of a batch of SAEs, as a batch of one."""
    k = None if sae.k is None else [sae.k[i]]
    return ToySAE(sae.W_enc[i : i + 1], sae.b_enc[i : i + 1], sae.W_dec[i : i + 1], sae.b_dec[i : i + 1], k)


def one_active(directions: torch.Tensor, batch: int, generator: torch.Generator, low: float = 0.5) -> torch.Tensor:
    """Inputs with exactly one feature active, at a value uniform on [low, 1]: ``[batch, d]`` from the features'
    directions ``[n, d]`` (a feature chosen uniformly for each input)."""
    which = torch.randint(0, len(directions), (batch,), generator=generator)
    size = low + (1 - low) * torch.rand(batch, 1, generator=generator)
    return size * directions[which]


def length_kept(sae: ToySAE, x: torch.Tensor, fired_only: bool = False) -> torch.Tensor:
    """How much of the inputs' length the reconstruction keeps along them, pooled: ``Σ x̂ · x / Σ ‖x‖²`` over the
    inputs ``x`` ``[batch, d_in]``, per instance ``[instance]``; 1 is no shrinkage, below 1 the SAE shrinks. With
    ``fired_only``, only over the inputs on which at least one latent fires (see :func:`none_fires`)."""
    latents = sae_latents(sae, x)
    x_hat = sae_reconstruct(sae, latents)
    weight = (latents > 0).any(-1).float() if fired_only else torch.ones(latents.shape[:2])  # [instance, batch]
    return ((x_hat * x).sum(-1) * weight).sum(-1) / (x.pow(2).sum(-1) * weight).sum(-1).clamp_min(1e-12)


def none_fires(sae: ToySAE, x: torch.Tensor) -> torch.Tensor:
    """The share of the inputs ``x`` ``[batch, d_in]`` on which no latent fires, ``[instance]``: their
    reconstruction is the decoder bias alone."""
    return (~(sae_latents(sae, x) > 0).any(-1)).float().mean(-1)


def unexplained_variance(sae: ToySAE, x: torch.Tensor) -> torch.Tensor:
    """The share of the inputs' variance the reconstruction misses, ``Σ‖x − x̂‖² / Σ‖x − x̄‖²``, ``[instance]``."""
    x_hat = sae_reconstruct(sae, sae_latents(sae, x))
    return (x_hat - x).pow(2).sum((-1, -2)) / (x - x.mean(0)).pow(2).sum()
