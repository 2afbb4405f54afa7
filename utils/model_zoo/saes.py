"""The zoo's sparse autoencoders: trained with SAELens on a zoo model's residual stream, saved
in SAELens's own format under ``data/saes/<name>/``, loaded offline with SAELens's own loader,
each with a card measured on held-out Storyworld by ``utils.cards.sae_cards``.

Command line (``make zoo`` runs ``all --replace-zoo-sae`` after the models, then writes the cards)::

    python -m utils.model_zoo.saes all --replace-zoo-sae
    python -m utils.model_zoo.saes storyworld-4l-res3-topk [--fresh | --retrain] [--tokens N] [--out DIR]

A trained SAE goes to ``runs/saes/<name>/`` (or the folder ``--out`` names: new, empty, or an
earlier run of the same SAE) with a card holding its checksums, so that ``load_sae(name,
folder=...)`` loads it at once; the zoo's own copy in ``data/saes/<name>/``, which the lessons
load, is replaced only with ``--replace-zoo-sae``.

How an SAE is trained: the model runs once over the SAE's Storyworld stream and its activations
at the hook are cached in chunks under ``runs/saes/`` (a rerun reuses every finished chunk, and
SAEs on the same hook share them); SAELens's ``SAETrainer`` is then driven directly with
shuffled batches from that cache. ``scripts/sae_paths.py`` times SAELens's three ways to train on
our model (``benchmarks/sae_paths.json``): for one SAE, its runner with the model in the loop is
the fastest end to end (about 5,800 tokens/s on 2 cores, against 5,200 with SAELens's own cache
and 4,500 for this path); the zoo caches anyway, because the SAEs on one hook share one cache
(computing it once and training two SAEs from it beats running the model twice) and because a
rerun after an interruption keeps every finished chunk. An interrupted SAE is trained again from
its start (about two minutes).

What a local model needs from SAELens, in one place here: every path rescales its inputs
(``normalize_activations="expected_average_only_in"``, see :func:`training_sae`); the
model-in-the-loop runner needs :func:`runner_config`; SAELens's own activation cache needs
:func:`sae_lens_cache`, which points its hub loader at our model. ``scripts/sae_paths.py`` uses
the last two.
"""

from __future__ import annotations

import argparse
import json
import math
import shlex
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from utils import paths
from utils.corpora import storyworld
from utils.corpora.storyworld import _positive
from utils.corpora.tokenizer import EOT, load_tokenizer
from utils.model_zoo.models import (
    ZooError,
    default_device,
    disk_full,
    load_model,
    output_problem,
    restore_hint,
    sha256_file,
    write_folder,
    write_problem,
)
from utils.model_zoo.packing import PackedStream, device_name
from utils.model_zoo.registry import DEFAULT_SAE, DEFAULT_SAES, SAES, SAESpec, sae_entry

SAES_DIR = paths.DATA / "saes"
WEIGHTS = "sae_weights.safetensors"  # SAELens's file names
CONFIG = "cfg.json"
CARD_DOCS = 2000  # held-out documents each card is measured on (as for the model cards)
ROWS_PER_CHUNK = 64  # rows of 256 tokens the model runs on per cached chunk
N_CTX = 256

__all__ = [
    "DEFAULT_SAE",
    "SAES",
    "SAES_DIR",
    "activations",
    "cached_activations",
    "fit",
    "load_sae",
    "rebuild_command",
    "train",
]


class SAEError(ZooError):
    """A zoo SAE is missing, corrupt or cannot be built; the message says how to rebuild it."""


def rebuild_command(name: str) -> str:
    """The command that trains the zoo's own copy of ``name`` again (even where its training record
    says it is up to date: its files may be damaged)."""
    return f"python -m utils.model_zoo.saes {name} --retrain --replace-zoo-sae"


# ---------------------------------------------------------------------------------------
# Activations


def require_course_tokens(model) -> None:
    """Refuse, in one sentence, a model that reads another tokenizer than the course's: the cached
    activations are Storyworld in the course tokenizer's ids, which mean other words to it."""
    tokenizer, course = getattr(model, "tokenizer", None), load_tokenizer()
    if tokenizer is not None and tokenizer.get_vocab() != course.get_vocab():
        name = getattr(getattr(model, "cfg", None), "model_name", None) or type(model).__name__
        raise ValueError(
            f"{name} reads its own tokenizer ({len(tokenizer):,} tokens), not the course tokenizer "
            f"({len(course):,}) these activations are cut in: fit its SAE with saes.fit on its stream over its own "
            "tokens (lesson 06's section on SmolLM2 does, from planted.planted_tokens(model.tokenizer, ...))"
        )


@torch.no_grad()
def activations(model, hook: str, rows: torch.Tensor) -> torch.Tensor:
    """The residual stream at ``hook`` on token ``rows [row, pos]`` (course-tokenizer ids), with the
    document-boundary tokens left out: ``[token, d_model]`` float16 on the CPU."""
    require_course_tokens(model)
    eot = load_tokenizer().convert_tokens_to_ids(EOT)
    # only the cache is read: the head unembeds the last position alone (the same activations)
    _, cache = model.run_with_cache(
        rows.to(next(model.parameters()).device), names_filter=lambda n: n == hook, logits_to_keep=1
    )
    return cache[hook][rows != eot].to("cpu", torch.float16)


def model_sha256(model_name: str) -> str:
    """The sha256 of a zoo model's weights, from its card."""
    from utils.model_zoo.models import read_card as read_model_card

    return read_model_card(model_name)["weights_sha256"]


def activation_folder(spec: SAESpec) -> Path:
    """Where ``spec``'s activations are cached: one folder per model weights, hook and stream, so
    SAEs on the same hook share it and a retrained model never reads its predecessor's."""
    return paths.RUNS / "saes" / f"{spec.model}-{model_sha256(spec.model)[:12]}.{spec.hook}.seed{spec.data_seed}"


def cached_activations(spec: SAESpec, model, tokens: int, folder: Path | None = None) -> torch.Tensor:
    """At least ``tokens`` activations for ``spec`` (``[token, d_model]`` float16) on packed rows of
    256 tokens of Storyworld stream ``spec.data_seed``, computed chunk by chunk into ``folder``
    (default :func:`activation_folder`). Chunks already there are read back
    instead of computed, so an interrupted run loses at most one chunk."""
    require_course_tokens(model)
    folder = Path(folder or activation_folder(spec))
    folder.mkdir(parents=True, exist_ok=True)
    stream = PackedStream(spec.data_seed, N_CTX - 1, load_tokenizer())
    chunks, have, index = [], 0, 0
    with tqdm(total=tokens, desc=f"activations of {spec.model} at {spec.hook}", unit="tok", unit_scale=True) as bar:
        while have < tokens:
            rows = stream.batch(ROWS_PER_CHUNK)[:, :N_CTX]  # drawn either way: the next chunk starts after it
            path = folder / f"chunk-{index:05d}.safetensors"
            if path.exists():
                chunk = load_file(path)["acts"]
            else:
                t = time.time()
                chunk = activations(model, spec.hook, rows)
                seconds = {"seconds": f"{time.time() - t:.3f}"}  # what the chunk cost, kept for the card
                save_file({"acts": chunk}, folder / f"{path.name}.tmp", metadata=seconds)
                (folder / f"{path.name}.tmp").rename(path)  # whole chunks only
            chunks.append(chunk)
            have += len(chunk)
            bar.update(len(chunk))
            index += 1
    return torch.cat(chunks)[:tokens]


def activation_seconds(folder: Path, tokens: int) -> float:
    """How long the model took to compute the cached chunks that hold the first ``tokens``
    activations in ``folder``, whenever each was computed (each chunk records its own time)."""
    from safetensors import safe_open

    total, have = 0.0, 0
    for path in sorted(Path(folder).glob("chunk-*.safetensors")):
        if have >= tokens:
            break
        with safe_open(path, "pt") as f:
            total += float(f.metadata()["seconds"])
            have += f.get_slice("acts").get_shape()[0]
    return total


def shuffled_batches(acts: torch.Tensor, batch: int, seed: int) -> Iterator[torch.Tensor]:
    """Endless float32 batches ``[batch, d_in]`` of ``acts``, in a new seeded order every pass."""
    if len(acts) < batch:
        raise ValueError(f"{len(acts)} activations cannot fill one batch of {batch}: collect more tokens")
    g = torch.Generator().manual_seed(seed)
    while True:
        order = torch.randperm(len(acts), generator=g)
        for i in range(0, len(order) - batch + 1, batch):
            yield acts[order[i : i + batch]].float()


# ---------------------------------------------------------------------------------------
# Training with SAELens


def training_sae(architecture: str, d_in: int, d_sae: int, sparsity: float | None = None):
    """A freshly initialised SAELens training SAE. ``sparsity`` is ``k`` for ``"topk"`` (keeps
    the ``k`` largest latents), the target L0 for ``"jumprelu"`` (learned thresholds as in
    Rajamanoharan et al. 2024, trained with SAELens's quadratic penalty on the distance from a
    target L0, which SAELens takes from Gemma Scope 2) and the L1 coefficient for ``"standard"``
    (ReLU with an L1 penalty).
    Inputs are rescaled to an average norm of √d_in during training; SAELens folds the scale into
    the weights at the end."""
    from sae_lens.saes.jumprelu_sae import JumpReLUTrainingSAE, JumpReLUTrainingSAEConfig
    from sae_lens.saes.standard_sae import StandardTrainingSAE, StandardTrainingSAEConfig
    from sae_lens.saes.topk_sae import TopKTrainingSAE, TopKTrainingSAEConfig

    common = dict(d_in=d_in, d_sae=d_sae, normalize_activations="expected_average_only_in")
    if sparsity is None or sparsity <= 0:
        raise ValueError(f"a {architecture} SAE needs a positive sparsity setting (k, target L0 or L1 coefficient)")
    if architecture == "topk":
        return TopKTrainingSAE(TopKTrainingSAEConfig(k=int(sparsity), **common))
    if architecture == "jumprelu":
        cfg = JumpReLUTrainingSAEConfig(jumprelu_sparsity_loss_mode="quadratic", target_l0=sparsity, **common)
        return JumpReLUTrainingSAE(cfg)
    if architecture == "standard":
        return StandardTrainingSAE(StandardTrainingSAEConfig(l1_coefficient=sparsity, **common))
    raise ValueError(f"unknown SAE architecture {architecture!r}: choose 'topk', 'jumprelu' or 'standard'")


def fit(
    acts: torch.Tensor,
    architecture: str = "topk",
    d_sae: int = 2048,
    sparsity: float = 16,
    tokens: int | None = None,
    batch: int = 1024,
    lr: float = 1e-3,
    seed: int = 0,
    progress: bool = True,
    batches: Iterator[torch.Tensor] | None = None,
):
    """Train an SAE on ``acts [token, d_in]`` with SAELens's ``SAETrainer`` (``sparsity`` as in
    :func:`training_sae`): ``tokens`` training examples in all (default one pass), in batches of
    ``batch``. The learning rate warms up over 10 steps, stays constant, and falls linearly to zero
    over the last fifth of the steps (SAELens's constant schedule with decay steps).
    ``batches`` replaces the default data provider (:func:`shuffled_batches`) with your own endless
    iterator of ``[batch, d_in]`` tensors. Returns ``(sae, history)``: the trained SAE
    (inference-ready: the input scale folded in, every decoder row of unit norm) and, per step, its
    reconstruction loss and L0 on the batch."""
    from sae_lens.config import SAETrainerConfig
    from sae_lens.training.sae_trainer import SAETrainer

    class _Recording(SAETrainer):
        """SAELens's trainer, keeping each step's losses (SAELens itself only sends them to wandb)."""

        def step(self, batch):
            out = super().step(batch)
            self.history.append(
                {
                    "step": len(self.history),
                    "mse": out.losses["mse_loss"].item(),
                    "l0": (out.feature_acts > 0).float().sum(-1).mean().item(),
                }
            )
            return out

    tokens = tokens or len(acts)
    steps = max(1, tokens // batch)
    torch.manual_seed(seed)
    sae = training_sae(architecture, acts.shape[1], d_sae, sparsity)
    cfg = SAETrainerConfig(
        total_training_samples=steps * batch,
        train_batch_size_samples=batch,
        lr=lr,
        lr_end=lr / 10,
        lr_scheduler_name="constant",
        lr_warm_up_steps=min(10, steps // 10),
        lr_decay_steps=steps // 5,
        n_batches_for_norm_estimate=min(20, steps),
        dead_feature_window=max(1, steps // 4),
        feature_sampling_window=max(1, steps // 2),
    )
    trainer = _Recording(cfg, sae, batches or shuffled_batches(acts, batch, seed))
    trainer.history = []
    with torch.enable_grad():  # a notebook may have switched gradients off
        if progress:
            trained = trainer.fit()
        else:
            import sae_lens.training.sae_trainer as module

            quiet = module.tqdm
            module.tqdm = lambda *a, **kw: quiet(*a, **{**kw, "disable": True})
            try:
                trained = trainer.fit()
            finally:
                module.tqdm = quiet
    _unit_decoder_rows(trained)
    return trained, trainer.history


@torch.no_grad()
def _unit_decoder_rows(sae) -> None:
    """Fold the decoder rows' norms into the encoder (SAELens's ``fold_W_dec_norm``), so that every
    decoder row is a unit direction and a latent's value is the length along it. The SAE computes
    the same latents and reconstruction as before. A TopK SAE trained to rescale its
    pre-activations by those norms no longer needs to: they are all 1."""
    sae.fold_W_dec_norm()
    if hasattr(sae.cfg, "rescale_acts_by_decoder_norm"):
        sae.cfg.rescale_acts_by_decoder_norm = False


def train(
    name: str,
    tokens: int | None = None,
    fresh: bool = False,
    out_dir: Path | None = None,
    replace_zoo_sae: bool = False,
) -> Path:
    """Train the zoo SAE ``name`` (its activations cached, see the module's docstring) and save it in
    SAELens's format with ``training.json``, its training curve and a first card (its checksums;
    ``utils.cards.sae_cards`` measures the rest) into ``out_dir`` (default ``runs/saes/<name>``; a
    folder holding other files is refused), or over the zoo's own copy with ``replace_zoo_sae``."""
    spec = sae_entry(name)
    zoos_own = SAES_DIR / name
    if replace_zoo_sae and out_dir is not None and Path(out_dir).resolve() != zoos_own.resolve():
        raise SAEError(
            f"--replace-zoo-sae writes the zoo's own {paths.shown(zoos_own)}, not {paths.shown(out_dir)}: "
            "leave out one of the two"
        )
    default = paths.RUNS / "saes" / name
    out = zoos_own if replace_zoo_sae else Path(out_dir) if out_dir is not None else default
    problem = output_problem(out, name, zoos_own, replace_zoo_sae, "--replace-zoo-sae", default)
    if problem:
        raise SAEError(problem)
    tokens = tokens or spec.tokens
    device = default_device()
    model = load_model(spec.model, device)
    run = activation_folder(spec)
    if fresh and run.exists():
        for chunk in run.glob("chunk-*.safetensors"):
            chunk.unlink()
    acts = cached_activations(spec, model, tokens, run)
    t_acts = activation_seconds(run, tokens)
    t0 = time.time()
    sae, history = fit(
        acts, spec.architecture, spec.d_sae, spec.k or spec.target_l0, tokens, spec.batch, spec.lr, spec.seed
    )
    t_fit = time.time() - t0
    sae.cfg.metadata.model_name = spec.model
    sae.cfg.metadata.hook_name = spec.hook
    sae.cfg.metadata.context_size = N_CTX
    import sae_lens

    training = {
        "name": name,
        "model": spec.model,
        "hook": spec.hook,
        "architecture": spec.architecture,
        "sparsity": spec.sparsity,
        "d_in": acts.shape[1],
        "d_sae": spec.d_sae,
        "tokens": (tokens // spec.batch) * spec.batch,
        "batch": spec.batch,
        "lr": spec.lr,
        "seed": spec.seed,
        "data_seed": spec.data_seed,
        "model_sha256": model_sha256(spec.model),
        "activation_seconds": round(t_acts, 1),
        "training_seconds": round(t_fit, 1),
        "training_tokens_per_s": round(tokens / t_fit),
        "device": device_name(device),
        "sae_lens": sae_lens.__version__,
        "torch": torch.__version__,
    }
    lines = ["step,mse,l0"] + [f"{h['step']},{h['mse']:.5g},{h['l0']:.4g}" for h in history]

    def write(folder: Path) -> None:
        sae.save_model(folder)
        (folder / "training.json").write_text(json.dumps(training, indent=1))
        (folder / "train_log.csv").write_text("\n".join(lines) + "\n")
        card = {
            "name": name,
            "weights_sha256": sha256_file(folder / WEIGHTS),
            "config_sha256": sha256_file(folder / CONFIG),
        }
        (folder / "card.json").write_text(json.dumps(card, indent=1))  # what load_sae checks

    try:
        return write_folder(out, write)
    except Exception as e:
        problem = write_problem(e, out)
        if problem is None:
            raise
        fix = "free some space on that disk" if disk_full(e) else "make it writable"
        raise SAEError(
            f"{problem}: the SAE was not written (the cached activations in {paths.shown(run)} are kept); {fix} and "
            "run the same command again"
        ) from None


def runner_config(spec: SAESpec, tokens: int, batch: int | None = None):
    """A ``LanguageModelSAERunnerConfig`` that trains ``spec`` with SAELens's runner and the model
    in the loop (for ``scripts/sae_paths.py``). The workarounds a local model needs: pass the
    model and an in-memory dataset to the runner (``override_model``, ``override_dataset``);
    ``model_from_pretrained_kwargs={}`` (else SAELens warns about a default it never uses);
    ``normalize_activations="expected_average_only_in"`` (with none, small residual norms left
    every latent dead); no wandb."""
    from sae_lens import LanguageModelSAERunnerConfig, LoggingConfig

    batch = batch or spec.batch
    sae = training_sae(spec.architecture, 256, spec.d_sae, spec.k or spec.target_l0).cfg
    return LanguageModelSAERunnerConfig(
        sae=sae,
        model_name=spec.model,
        hook_name=spec.hook,
        dataset_path="",
        is_dataset_tokenized=True,
        context_size=N_CTX,
        prepend_bos=False,
        training_tokens=tokens,
        train_batch_size_tokens=batch,
        store_batch_size_prompts=16,
        n_batches_in_buffer=4,
        n_batches_for_norm_estimate=20,  # SAELens's default, 1000 batches, takes minutes here
        lr=spec.lr,
        device="cpu",
        seed=spec.seed,
        model_from_pretrained_kwargs={},
        exclude_special_tokens=True,
        logger=LoggingConfig(log_to_wandb=False),
        save_final_checkpoint=False,
        n_checkpoints=0,
        checkpoint_path=str(paths.RUNS / "saes" / "runner"),
        output_path=None,
        verbose=False,
    )


def token_dataset(seed: int, rows: int):
    """``rows`` packed rows of 256 tokens of Storyworld stream ``seed`` as the in-memory
    ``datasets.Dataset`` (one ``input_ids`` column) SAELens's runners read instead of a hub dataset."""
    from datasets import Dataset

    stream = PackedStream(seed, N_CTX - 1, load_tokenizer())
    return Dataset.from_dict({"input_ids": stream.batch(rows)[:, :N_CTX].tolist()})


def sae_lens_cache(spec: SAESpec, model, tokens: int, folder: Path):
    """SAELens's own activation cache (``CacheActivationsRunner``) for ``spec``, written to
    ``folder``, for ``scripts/sae_paths.py``. The workaround: that runner has no
    ``override_model`` and loads its model by name from the hub, so its loader is pointed at
    ``model`` while it is built."""
    import sae_lens.cache_activations_runner as runner
    from sae_lens import CacheActivationsRunnerConfig

    cfg = CacheActivationsRunnerConfig(
        dataset_path="",
        model_name=spec.model,
        model_batch_size=16,
        hook_name=spec.hook,
        d_in=model.cfg.d_model,
        training_tokens=tokens,
        context_size=N_CTX,
        new_cached_activations_path=str(folder),
        prepend_bos=False,
        device="cpu",
        streaming=False,
        # SAELens fills buffers of this size whatever the token budget (2 GB by default): buffers
        # of a quarter of the budget (one model batch at least) cache what it needs and no more.
        buffer_size_gb=min(2.0, max(tokens // 4, 16 * N_CTX) * model.cfg.d_model * 4 * 1.01 / 1e9),
        model_from_pretrained_kwargs={},
    )
    dataset = token_dataset(spec.data_seed, math.ceil(tokens / N_CTX) + 16)
    hub_loader = runner.load_model
    runner.load_model = lambda *args, **kwargs: model
    try:
        return runner.CacheActivationsRunner(cfg, override_dataset=dataset).run()
    finally:
        runner.load_model = hub_loader


# ---------------------------------------------------------------------------------------
# Loading and cards


def up_to_date(name: str) -> bool:
    """Whether ``name`` is built from its current spec on the current model weights, with a card."""
    spec, folder = sae_entry(name), SAES_DIR / name
    try:
        training = json.loads((folder / "training.json").read_text())
        card = json.loads((folder / "card.json").read_text())
    except (OSError, ValueError):
        return False
    wanted = {
        "hook": spec.hook,
        "architecture": spec.architecture,
        "sparsity": spec.sparsity,
        "d_sae": spec.d_sae,
        "batch": spec.batch,
        "lr": spec.lr,
        "seed": spec.seed,
        "data_seed": spec.data_seed,
        "tokens": (spec.tokens // spec.batch) * spec.batch,
        "model_sha256": model_sha256(spec.model),
    }
    return "eval" in card and all(training.get(k) == v for k, v in wanted.items())


def built() -> list[str]:
    """The zoo's SAEs whose weights are on disk."""
    return [n for n in SAES if (SAES_DIR / n / WEIGHTS).exists()]


def load_sae(name: str = DEFAULT_SAE, device: str | None = None, *, verify: bool = True, folder: Path | None = None):
    """A zoo SAE, loaded offline by SAELens's own loader (``SAE.load_from_disk``).

    The weights and config are checked against the sha256 on the card; a missing or corrupt
    file raises ``SAEError`` with the command that rebuilds it; an unknown name raises
    ``KeyError`` listing the zoo's SAEs."""
    from sae_lens import SAE

    sae_entry(name)
    folder = Path(folder or SAES_DIR / name)
    weights, config, card_path = folder / WEIGHTS, folder / CONFIG, folder / "card.json"
    for path in (weights, config):
        if not path.exists():
            raise SAEError(
                f"zoo SAE {name!r} is not built: {paths.shown(path)} is missing "
                f"(built: {', '.join(built()) or 'none'}). Rebuild it with: {rebuild_command(name)}"
            )
    if verify:
        if not card_path.exists():
            raise SAEError(
                f"zoo SAE {name!r} has no card ({paths.shown(card_path)}); {restore_hint(card_path)} "
                f"or write it with: python -m utils.cards.sae_cards {name}"
            )
        card = _read_card_file(name, card_path)
        for path, key in ((weights, "weights_sha256"), (config, "config_sha256")):
            digest = sha256_file(path)
            if digest != card.get(key):
                raise SAEError(
                    f"{paths.shown(path)} does not match the card of {name} (sha256 {digest[:12]}… != "
                    f"{str(card.get(key))[:12]}…): the file is corrupt or from another run. "
                    f"Restore it with `git checkout -- {paths.shown(path)}` or rebuild it with: {rebuild_command(name)}"
                )
    try:
        return SAE.load_from_disk(str(folder), device=device or default_device())
    except Exception as e:  # SAELens raises several kinds for a damaged file
        raise SAEError(
            f"could not load {name} from {paths.shown(folder)}: {e}. Rebuild it with: {rebuild_command(name)}"
        ) from e


# Pretrained SAELens SAEs for hub models, at the stream after the last layer like the zoo's.
HUB_SAES = {"gpt2-small": ("gpt2-small-resid-post-v5-32k", "blocks.11.hook_resid_post")}


QUICK_SAE_TOKENS = 32_768  # Storyworld tokens a quick SAE for a model without one is trained on


def load_sae_for(model_name: str, device: str | None = None, model=None):
    """The SAE lesson 06 uses for ``model_name``: the zoo's default SAE for a zoo model (offline), or
    a pretrained SAELens release for a hub model in ``HUB_SAES`` (only where the hub is reachable:
    ``SAE.from_pretrained``). For any other model, given the loaded ``model``, a quick TopK SAE
    trained here on its last residual stream (:func:`quick_sae`); without it, ``ValueError``
    naming the models that have one."""
    if model_name in DEFAULT_SAES:
        return load_sae(DEFAULT_SAES[model_name], device)
    if model_name in HUB_SAES:
        from sae_lens import SAE

        from utils.model_zoo.models import hub_unreachable

        why = hub_unreachable()
        if why:
            raise SAEError(
                f"the pretrained SAE for {model_name} comes from the Hugging Face hub, which is not reachable ({why})"
            )
        release, sae_id = HUB_SAES[model_name]
        return SAE.from_pretrained(release, sae_id, device=device or default_device())
    if model is not None:
        return quick_sae(model, model_name, device)
    raise ValueError(
        f"no SAE for {model_name!r}: the zoo has SAEs for {', '.join(DEFAULT_SAES)}, "
        f"and SAELens's pretrained ones are wired up for {', '.join(HUB_SAES)}"
    )


def quick_sae(model, model_name: str, device: str | None = None, tokens: int = QUICK_SAE_TOKENS, seed: int = 0):
    """A TopK SAE (8 latents per dimension, k = 16) trained in seconds on ``tokens`` tokens of
    Storyworld at ``model``'s last residual stream: for a model that has no published SAE. Its
    latents are this small run's, not a published dictionary's; say so when you quote them."""
    hook = f"blocks.{model.cfg.n_layers - 1}.hook_resid_post"
    d_model = model.cfg.d_model
    print(
        f"no SAE is published for {model_name}: training a quick TopK SAE ({8 * d_model} latents, k = 16) on "
        f"{tokens:,} Storyworld tokens at {hook}"
    )
    stream = SAESpec.__dataclass_fields__["data_seed"].default  # the zoo SAEs' training stream
    docs = storyworld.sample_docs(stream, 400)
    ids = torch.tensor([t for d in docs for t in model.tokenizer(d.text, add_special_tokens=False)["input_ids"]])
    rows = ids[: (len(ids) // 128) * 128].view(-1, 128)  # [row, 128]
    acts = []
    for i in range(0, len(rows), 16):
        _, cache = model.run_with_cache(
            rows[i : i + 16].to(next(model.parameters()).device),
            names_filter=lambda n: n == hook,
            logits_to_keep=1,
        )
        acts.append(cache[hook].flatten(0, 1).float().cpu())  # [token, d_model]
    acts = torch.cat(acts)[:tokens]
    sae, _ = fit(acts, "topk", 8 * d_model, 16, len(acts), batch=512, seed=seed, progress=False)
    sae.cfg.metadata.model_name = model_name
    sae.cfg.metadata.hook_name = hook
    return sae.to(device or default_device())


def read_card(name: str) -> dict:
    path = SAES_DIR / name / "card.json"
    if not path.exists():
        raise SAEError(
            f"zoo SAE {name!r} has no card at {paths.shown(path)}; "
            f"write it with: python -m utils.cards.sae_cards {name}"
        )
    return _read_card_file(name, path)


def _read_card_file(name: str, path: Path) -> dict:
    """The card at ``path``, or an ``SAEError`` naming the file, where it breaks and how to fix it."""
    rewrite = f"rewrite it with: python -m utils.cards.sae_cards {name}"
    try:
        card = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        where = f"line {e.lineno} column {e.colno}: {e.msg}" if isinstance(e, json.JSONDecodeError) else "not UTF-8"
        raise SAEError(
            f"the card of the SAE {name} is not valid JSON ({paths.shown(path)}, {where}); {restore_hint(path)} or "
            f"{rewrite}"
        ) from None
    if not isinstance(card, dict):
        raise SAEError(
            f"the card of the SAE {name} ({paths.shown(path)}) holds no settings; {restore_hint(path)} or {rewrite}"
        )
    return card


# ---------------------------------------------------------------------------------------
# Command line


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m utils.model_zoo.saes", description=__doc__.split("\n\n")[0])
    ap.add_argument("name", choices=sorted(SAES) + ["all"], help="zoo SAE to train (or all)")
    ap.add_argument("--tokens", type=_positive, help="override the training budget (quick trials)")
    ap.add_argument("--fresh", action="store_true", help="retrain, recomputing the cached activations")
    ap.add_argument("--retrain", action="store_true", help="retrain an up-to-date SAE, reusing cached activations")
    ap.add_argument(
        "--out", type=Path, help="the SAE's folder: new, empty, or an earlier run of it (default runs/saes/<name>)"
    )
    ap.add_argument(
        "--replace-zoo-sae",
        action="store_true",
        help="write the SAE over the zoo's own copy in data/saes/<name>, which the lessons load (make zoo)",
    )
    return ap


def written(name: str, out: Path, replaced_zoo: bool) -> str:
    """The last line of a run: where the SAE went, how to load it and how to measure its card."""
    if replaced_zoo:
        return f"wrote {paths.shown(out)}; measure its card with: python -m utils.cards.sae_cards {name}"
    where = str(Path(out).absolute())
    measure = f"from utils.cards.sae_cards import write_card; write_card({name!r}, {where!r})"
    return (
        f"wrote {paths.shown(out)} (the zoo's own {name} is unchanged); load it with "
        f'load_sae({name!r}, folder={where!r}), and measure its card with: python -c "{measure}"'
    )


def main(argv=None) -> int:
    ap = _parser()
    args = ap.parse_args(argv)
    if args.name == "all" and args.out is not None:
        ap.error("--out names one SAE's folder: with all, each SAE goes to runs/saes/<name>")
    names = list(SAES) if args.name == "all" else [args.name]
    refreshed: set[Path] = set()  # --fresh recomputes each activation cache once, not once per SAE on it
    try:
        for name in names:
            if args.tokens is None and not (args.fresh or args.retrain) and up_to_date(name):
                print(f"{name} is up to date with its spec and model; skipping (--retrain redoes it)", file=sys.stderr)
            else:
                fresh = args.fresh and activation_folder(SAES[name]) not in refreshed
                refreshed.add(activation_folder(SAES[name]))
                out = train(name, args.tokens, fresh, args.out, args.replace_zoo_sae)
                print(written(name, out, args.replace_zoo_sae), file=sys.stderr)
    except KeyboardInterrupt:
        words = ["python", "-m", "utils.model_zoo.saes", args.name]
        words += ["--tokens", str(args.tokens)] if args.tokens else []
        words += ["--retrain"] if args.retrain or args.fresh else []
        words += ["--out", str(args.out)] if args.out is not None else []
        words += ["--replace-zoo-sae"] if args.replace_zoo_sae else []
        print(f"interrupted; the cached activations are kept, resume with: {shlex.join(words)}", file=sys.stderr)
        return 130
    except (ZooError, ValueError) as e:
        print(f"python -m utils.model_zoo.saes: error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
