"""The model zoo's identity, in one place: what each model is, how it is trained, what it must show.

Every other module asks here: ``utils.model_zoo.models`` which names are zoo names, ``utils.model_zoo.train``
how to train one, ``utils.cards.model_cards`` what to measure and which targets and tolerances the
card records, the lessons' tests which model each lesson uses.

    >>> from utils.model_zoo.registry import ZOO
    >>> ZOO["storyworld-4l"].targets["gap"]
    ('<=', 0.1)
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace


@dataclass(frozen=True)
class Spec:
    """Everything that defines a zoo model's training run."""

    name: str
    arch: str  # "attn-only" (boot_native), "gpt2" or "llama" (HF checkpoints)
    config: dict
    seed: int  # initialisation and batch order
    data_seed: int  # stream of the corpus (Storyworld by default) the model is trained on
    tokens: int  # training budget
    lr: float = 2e-3
    batch: int = 32
    n_ctx: int = 256
    warmup: float = 0.03  # fraction of steps
    weight_decay: float = 0.1
    checkpoint_every: int = 50
    corpus: str = "storyworld"  # or "countdown" or "beliefs" (modules of utils.corpora), each with its own tokenizer

    @property
    def format(self) -> str:
        """How the checkpoint is stored: ``native`` (TransformerBridge state) or ``hf``."""
        return "native" if self.arch == "attn-only" else "hf"


# How far a fresh measurement on other held-out documents (``python -m utils.cards.model_cards``,
# 1000 documents) may sit from the card's 2000-document measurement.
TOLERANCE = {
    "loss": 0.03,
    "floor": 0.03,
    "gap": 0.02,
    "ioi_accuracy": 0.03,
    "ioi_logit_diff": 0.5,
    "prev_token_score_layer0": 0.05,
    "induction_score_layer1": 0.05,
    "induction_score": 0.05,
    "repeat_loss_drop": 0.4,
    "prev_token_score_all_words": 0.05,
    "induction_score_all_words": 0.05,
    "repeat_loss_drop_all_words": 0.4,
    "emotion_probe_accuracy": 0.04,
    "emotion_circle_correlation": 0.03,
    "steering_circle_correlation": 0.1,
}

# Copying that works on any word, not only on content words: on repeated random sequences of
# every single-token Storyworld word, function words included.
ALL_WORD_COPYING = {
    "prev_token_score_all_words": (">=", 0.8),
    "induction_score_all_words": (">=", 0.8),
    "repeat_loss_drop_all_words": (">=", 3.0),
}

# The countdown models: Llama-style like Qwen (RMSNorm, rotary, gated SiLU MLP), small enough to
# train in under half an hour on two CPU cores.
COUNTDOWN_LLAMA = dict(
    num_hidden_layers=4,
    hidden_size=128,
    num_attention_heads=4,
    num_key_value_heads=4,
    intermediate_size=512,
    rope_theta=10000.0,
)
# What lesson 08 reproduces of Lee et al. 2025 (self-verification), as pass criteria on held-out
# traces: the task done, then each step of the paper's analysis (utils.metrics.countdown).
COUNTDOWN_TARGETS = {
    "verdict_accuracy": (">=", 0.98),  # teacher-forced "this"/"not" at every "("
    "greedy_solved": (">=", 0.9),  # solvable problems whose greedy trace accepts a correct attempt
    "probe_best_accuracy": (">=", 0.97),
    "probe_embedding_accuracy": ("<=", 0.65),
    "probe_shuffled_accuracy": ("<=", 0.6),
    # the embeddings of the two numbers compared give away only what a number's identity does
    "probe_numbers_accuracy": ("<=", 0.85),
    "steer_accept_wrong": (">=", 0.8),
    "steer_reject_right": (">=", 0.8),
    "steer_random_accept_wrong": ("<=", 0.1),
    "neuron_auroc": (">=", 0.9),
    "neuron_zeroing_drop": (">=", 0.5),
    "random_neuron_zeroing_drop": ("<=", 0.1),
    "target_head_attention": (">=", 0.5),
    "top3_ablation_accuracy": ("<=", 0.3),
    "random3_ablation_drop": ("<=", 0.1),
    "top3_overlap": (">=", 2),
    "generation_rejects_top3": (">=", 0.7),
    "generation_rejects_without_ablation": ("<=", 0.05),
}
COUNTDOWN_TOLERANCE = {
    "loss": 0.02,
    "gap": 0.02,
    "verdict_accuracy": 0.02,
    "greedy_solved": 0.06,
    "probe_best_accuracy": 0.03,
    "probe_embedding_accuracy": 0.06,
    "probe_shuffled_accuracy": 0.08,
    "probe_numbers_accuracy": 0.06,
    "probe_written_accuracy": 0.06,
    "steer_accept_wrong": 0.08,
    "steer_reject_right": 0.08,
    "steer_random_accept_wrong": 0.06,
    "neuron_auroc": 0.04,
    "neuron_zeroing_drop": 0.1,
    "random_neuron_zeroing_drop": 0.06,
    "target_head_attention": 0.08,
    "top3_ablation_accuracy": 0.1,
    "random3_ablation_drop": 0.06,
    "top3_overlap": 1,
    "generation_rejects_top3": 0.1,
    "generation_rejects_without_ablation": 0.05,
}

# What a card can measure; each model lists the groups that apply to it.
MEASUREMENTS = ("loss", "heads", "ioi", "probe", "steering")
# The countdown model is measured on its own traces (utils.metrics.countdown).
COUNTDOWN_MEASUREMENTS = ("countdown",)

# The belief-stories models are measured on held-out stories (utils.metrics.beliefs): accuracy by
# question kind on two characters (as trained) and on three (never trained on).
BELIEFS_MEASUREMENTS = ("beliefs",)
BELIEFS_LLAMA = dict(COUNTDOWN_LLAMA)  # the countdown models' shape: 4 layers x 128, 4 heads, d_mlp 512
# beliefs-llama's recipe; its rerun changes only the seeds
BELIEFS_SPEC = Spec(
    "beliefs-llama",
    "llama",
    BELIEFS_LLAMA,
    seed=107,
    data_seed=31,
    tokens=60_000_000,
    batch=32,
    n_ctx=64,  # one story (with its follow-ups) a row: no earlier story's containers to look up
    corpus="beliefs",
)
BELIEFS_TARGETS = {
    "accuracy_own": (">=", 0.95),
    "accuracy_seen": (">=", 0.95),
    "accuracy_false": (">=", 0.95),
    "accuracy_unknown": (">=", 0.95),
    # three characters: above the reader that ignores visibility, right on about 81% there
    "accuracy_three_over_blind": (">=", 0.0),
}
BELIEFS_TOLERANCE = {
    "loss": 0.02,
    "gap": 0.02,
    "accuracy": 0.02,
    "accuracy_own": 0.03,
    "accuracy_seen": 0.04,
    "accuracy_false": 0.06,
    "accuracy_unknown": 0.03,
    "accuracy_three": 0.04,
    "accuracy_three_over_blind": 0.05,
}


@dataclass(frozen=True)
class ZooModel:
    """A zoo model: its training run, the targets its card must meet, the lessons that use it."""

    name: str
    spec: Spec | None  # None: planned, no training recipe yet
    targets: dict[str, tuple[str, float]]  # metric -> (comparison, threshold)
    lessons: tuple[str, ...]  # lesson numbers ("01") whose notebooks use it
    measurements: tuple[str, ...] = MEASUREMENTS
    tolerance: dict[str, float] = field(default_factory=lambda: dict(TOLERANCE))
    # Targets the committed weights are known to miss: metric -> what was measured instead.
    # The card shows each as not met with this reason; a test fails once the model meets it.
    missed: dict[str, str] = field(default_factory=dict)

    @property
    def planned(self) -> bool:
        return self.spec is None


ZOO: dict[str, ZooModel] = {
    m.name: m
    for m in [
        ZooModel(
            "storyworld-attn2l",
            Spec(
                "storyworld-attn2l",
                "attn-only",
                dict(
                    n_layers=2,
                    d_model=128,
                    n_heads=4,
                    d_head=32,
                    normalization_type="LN",
                    positional_embedding_type="rotary",
                    rotary_dim=16,
                ),
                seed=101,
                data_seed=11,
                tokens=30_000_000,
                batch=16,  # twice the steps of the others: induction formed late or never with 32
            ),
            targets={
                "prev_token_score_layer0": (">=", 0.8),
                "induction_score_layer1": (">=", 0.8),
                "repeat_loss_drop": (">=", 3.0),
                **ALL_WORD_COPYING,
            },
            lessons=("01", "02"),
            # An attention-only model has no MLPs to store a feeling in: no emotion probe.
            measurements=("loss", "heads", "ioi"),
        ),
        ZooModel(
            "storyworld-4l",
            Spec(
                "storyworld-4l",
                "gpt2",
                dict(n_layer=4, n_embd=256, n_head=8, n_inner=1024),
                seed=102,
                data_seed=12,
                tokens=24_000_000,
            ),
            targets={
                "gap": ("<=", 0.10),
                "ioi_accuracy": (">=", 0.95),
                "ioi_logit_diff": (">=", 3.0),
                "induction_score": (">=", 0.7),
                "emotion_probe_accuracy": (">=", 0.90),
                **ALL_WORD_COPYING,
            },
            lessons=("00", "02", "03", "04", "05", "06", "07", "10", "11", "A1"),
            missed={
                "prev_token_score_all_words": (
                    "no single head looks back: the job is shared by L1H2, L1H6, L2H2 and L2H6 "
                    "(ablating all four stops induction); 17 more runs (seeds, batch 8/16, lr, 4 heads) "
                    "spread it too, best 0.78"
                ),
            },
        ),
        ZooModel(
            "storyworld-llama",
            Spec(
                "storyworld-llama",
                "llama",
                dict(
                    num_hidden_layers=4,
                    hidden_size=192,
                    num_attention_heads=6,
                    num_key_value_heads=6,
                    intermediate_size=512,
                    rope_theta=10000.0,
                ),
                seed=103,
                data_seed=13,
                tokens=24_000_000,
            ),
            targets={"gap": ("<=", 0.15), "ioi_accuracy": (">=", 0.90)},
            lessons=("02", "07", "11", "A1"),
        ),
        ZooModel(
            "countdown-llama",
            Spec(
                "countdown-llama",
                "llama",
                COUNTDOWN_LLAMA,
                seed=104,
                data_seed=21,
                tokens=20_000_000,
                n_ctx=128,
                corpus="countdown",
            ),
            targets=COUNTDOWN_TARGETS,
            lessons=("08",),
            measurements=COUNTDOWN_MEASUREMENTS,
            tolerance=dict(COUNTDOWN_TOLERANCE),
            missed={
                "neuron_zeroing_drop": (
                    "the 61 aligned neurons write 9.6 of the 15.4-logit margin directly, but zeroed they leave "
                    "12.4 (8.6 with the final norm's scale held: the norm scales what is left back up) and no "
                    "verdict flips, so P(this) stays near 1. Three other runs missed it too, at every length measured "
                    "from 4M to 20M tokens (at most 7%): the recipe again, with seed 106, and with 8 heads of 16 "
                    "(benchmarks/experiments/countdown-design.log)"
                ),
                "top3_overlap": (
                    "the paper's pipeline ranks only the heads that put more than 0.1 of their attention on the "
                    "target's earlier occurrences (L1H0, L1H1, L1H2, L2H1, L2H2 here), and the ground truth's second "
                    "and third heads, L3H0 and L0H3, are not among them, so no score on the kept heads can pick "
                    "them; its first, L1H0, is kept and picked. The pick itself moves with the probe's sample: 8 of "
                    "10 bootstrap refits hold L1H0 (lesson 08 measures both)"
                ),
            },
        ),
        ZooModel(
            "countdown-llama-3l",
            Spec(
                "countdown-llama-3l",
                "llama",
                dict(COUNTDOWN_LLAMA, num_hidden_layers=3),
                seed=105,
                data_seed=22,
                tokens=20_000_000,
                n_ctx=128,
                corpus="countdown",
            ),
            # The second model lesson 08 runs on: it must do the task; its mechanism is explored, not targeted.
            targets={k: COUNTDOWN_TARGETS[k] for k in ("verdict_accuracy", "greedy_solved", "probe_best_accuracy")},
            lessons=("08",),
            measurements=COUNTDOWN_MEASUREMENTS,
            tolerance=dict(COUNTDOWN_TOLERANCE),
        ),
        ZooModel(
            "beliefs-llama",
            BELIEFS_SPEC,
            targets=BELIEFS_TARGETS,
            lessons=("09",),
            missed={
                "accuracy_three_over_blind": (
                    "on three-character stories, never trained on, it answers 58.8% of 2,000 questions (own 65.4%, "
                    "seen 70.3%, false 0.0%, unknown 56.5%), below the visibility-blind reader's 79.0%: what it "
                    "learnt on two characters does not carry to a third"
                ),
            },
            measurements=BELIEFS_MEASUREMENTS,
            tolerance=dict(BELIEFS_TOLERANCE),
        ),
        ZooModel(
            "beliefs-llama-rerun",
            replace(BELIEFS_SPEC, name="beliefs-llama-rerun", seed=108, data_seed=32),
            # The second model lesson 09 runs on: the same recipe from another seed and another stream of stories.
            # (A 3-layer run of this recipe reached 56% of held-out questions and was not kept.)
            targets={k: BELIEFS_TARGETS[k] for k in BELIEFS_TARGETS if k != "accuracy_three_over_blind"},
            lessons=("09",),
            measurements=BELIEFS_MEASUREMENTS,
            tolerance=dict(BELIEFS_TOLERANCE),
        ),
    ]
}

SPECS: dict[str, Spec] = {name: m.spec for name, m in ZOO.items() if m.spec is not None}


def entry(name: str) -> ZooModel:
    """The registry entry of a zoo model; ``KeyError`` names the zoo when ``name`` is not in it."""
    try:
        return ZOO[name]
    except KeyError:
        raise KeyError(f"{name!r} is not a zoo model; the zoo is: {', '.join(ZOO)}") from None


# ---------------------------------------------------------------------------------------
# Sparse autoencoders on zoo models' residual streams (``utils.model_zoo.saes``)


@dataclass(frozen=True)
class SAESpec:
    """Everything that defines one of the zoo's SAEs and its training run (with SAELens).

    ``architecture`` is SAELens's name: ``"topk"`` keeps the ``k`` largest latents of every
    token; ``"jumprelu"`` keeps each latent above its own learned threshold, trained with a
    quadratic penalty that pulls the mean L0 towards ``target_l0``. The
    activations come from ``model`` at ``hook`` on Storyworld stream ``data_seed`` (a stream
    no zoo model was trained on), in rows of 256 tokens, leaving out the document-boundary
    token, which carries none of a document's variables.
    """

    name: str
    model: str
    hook: str
    architecture: str
    d_sae: int = 2048
    k: int | None = None
    target_l0: float | None = None
    tokens: int = 2_000_000
    batch: int = 1024
    lr: float = 1e-3
    seed: int = 0
    data_seed: int = 14

    @property
    def sparsity(self) -> str:
        """The architecture's sparsity setting in words: ``k = 16`` or ``target L0 16``."""
        return f"k = {self.k}" if self.architecture == "topk" else f"target L0 {self.target_l0:g}"


SAES: dict[str, SAESpec] = {
    s.name: s
    for s in [
        SAESpec("storyworld-4l-res3-topk", "storyworld-4l", "blocks.3.hook_resid_post", "topk", k=16),
        SAESpec("storyworld-4l-res3-jumprelu", "storyworld-4l", "blocks.3.hook_resid_post", "jumprelu", target_l0=16),
        SAESpec("storyworld-llama-res3-topk", "storyworld-llama", "blocks.3.hook_resid_post", "topk", k=16),
    ]
}

# The SAE lesson 06 loads for each model. On storyworld-4l two architectures were trained at
# about the same L0 and the default is the one whose reconstruction loses less of the model's
# loss (its card gives both); the llama's SAE uses the architecture that won there.
DEFAULT_SAES = {"storyworld-4l": "storyworld-4l-res3-topk", "storyworld-llama": "storyworld-llama-res3-topk"}
DEFAULT_SAE = DEFAULT_SAES["storyworld-4l"]


def sae_entry(name: str) -> SAESpec:
    """The spec of a zoo SAE; ``KeyError`` lists the zoo's SAEs when ``name`` is not one."""
    try:
        return SAES[name]
    except KeyError:
        raise KeyError(f"{name!r} is not one of the zoo's SAEs: {', '.join(SAES)}") from None


# How far a fresh measurement of an SAE (150 other held-out documents) may sit from its card's.
# (The share of dead latents is not compared: on fewer tokens more latents look dead.)
SAE_TOLERANCE = {"l0": 1.5, "explained_variance": 0.01, "loss_recovered": 0.01}


@dataclass(frozen=True)
class TranscoderSpec:
    """A zoo model's set of transcoders, one per MLP layer, and their training run (with ``eai-sparsify``).

    Each reads its layer's MLP input and is trained to write the MLP's output through ``d_tc`` latents of
    which the ``k`` largest stay on (TopK), with sparsify's auxiliary loss (weight ``auxk_alpha``) pulling
    latents silent for ``dead_tokens`` tokens back into use. Data: Storyworld stream ``data_seed`` (the
    SAEs' stream, which no zoo model was trained on), ``tokens`` tokens in rows of 256, the
    document-boundary token left out. ``d_tc`` is 1,024 rather than a few thousand: many latents of these
    small models stay silent (a trial on storyworld-4l at 2,048 latents without AuxK left 58-85% per layer
    never active; at 1,024 with AuxK, the cards count 16-75% per layer that never fire on held-out
    documents), and the zoo's weights must stay small.
    """

    name: str
    model: str
    d_tc: int = 1024
    k: int = 16
    tokens: int = 2_000_000
    rows_per_batch: int = 8
    auxk_alpha: float = 1 / 32
    dead_tokens: int = 200_000
    seed: int = 0
    data_seed: int = 14


TRANSCODERS: dict[str, TranscoderSpec] = {
    s.name: s
    for s in [
        TranscoderSpec("storyworld-4l-transcoders", "storyworld-4l"),
        TranscoderSpec("storyworld-llama-transcoders", "storyworld-llama"),
    ]
}
DEFAULT_TRANSCODERS = {spec.model: spec.name for spec in TRANSCODERS.values()}


def transcoder_entry(name: str) -> TranscoderSpec:
    """The spec of a zoo transcoder set; ``KeyError`` lists the zoo's sets when ``name`` is not one."""
    try:
        return TRANSCODERS[name]
    except KeyError:
        raise KeyError(f"{name!r} is not one of the zoo's transcoder sets: {', '.join(TRANSCODERS)}") from None
