"""Load a model by name: zoo models from ``data/models``, anything else from the hub.

    >>> from utils import load_model
    >>> model = load_model("storyworld-4l")     # offline, from data/models/storyworld-4l
    >>> model = load_model("gpt2-small")        # from the Hugging Face hub (needs network)
    >>> model = load_model("path/to/folder")    # a model saved with save_pretrained, offline

Every model comes back as a TransformerLens ``TransformerBridge`` in eval mode.
"""

from __future__ import annotations

import contextlib
import difflib
import hashlib
import io
import json
import os
from pathlib import Path

import torch

from utils import paths
from utils.corpora.tokenizer import corpus_tokenizer, corpus_tokenizer_dir, corpus_tokenizer_hash
from utils.model_zoo import registry

# Zoo models the course plans (``utils.model_zoo.registry``); those without a directory are not built yet.
ZOO = tuple(registry.ZOO)
# Friendly names for hub models (TransformerLens-style) -> hub ids.
HUB_ALIASES = {
    "gpt2-small": "gpt2",
    "gpt2-medium": "gpt2-medium",
    "pythia-70m": "EleutherAI/pythia-70m",
    "pythia-160m": "EleutherAI/pythia-160m",
    "gemma-2-2b": "google/gemma-2-2b",
    "qwen2.5-0.5b": "Qwen/Qwen2.5-0.5B",
}


class ZooError(RuntimeError):
    """A zoo model is missing, corrupt, or does not match its card."""


def default_device() -> str:
    """cuda, then mps, then cpu."""
    if torch.cuda.is_available():
        return "cuda"
    if _mps_available():
        return "mps"
    return "cpu"


def _mps_available() -> bool:
    return getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()


def available_devices() -> list[str]:
    """The devices this machine can run on, as ``device=`` takes them: cpu, each CUDA GPU, mps."""
    gpus = [f"cuda:{i}" for i in range(torch.cuda.device_count())] if torch.cuda.is_available() else []
    return ["cpu"] + (["cuda"] + gpus if gpus else []) + (["mps"] if _mps_available() else [])


def check_device(device) -> str:
    """``device`` as torch takes it (``None``: the default; upper case is accepted), or a ``ValueError``
    in one sentence listing what this machine has."""
    if device is None:
        return default_device()
    have = ", ".join(available_devices())
    if not isinstance(device, (str, torch.device)):
        raise ValueError(f"device must be a name such as 'cpu', not {type(device).__name__}; this machine has: {have}")
    text = str(device).strip().lower()
    try:
        parsed = torch.device(text)
    except RuntimeError:
        raise ValueError(f"unknown device {device!r}: this machine has: {have}") from None
    if parsed.type == "cpu" or text in available_devices():
        return text
    cpu_only = "" if torch.backends.cuda.is_built() else ": this torch is built for the CPU only"
    why = {"cuda": f"torch sees no CUDA GPU{cpu_only}", "mps": "Apple's MPS is not available"}.get(
        parsed.type, f"torch has no {parsed.type} device here"
    )
    raise ValueError(f"device {device!r} is not available on this machine ({why}); this machine has: {have}")


def logits_of(model, tokens: torch.Tensor) -> torch.Tensor:
    """Logits ``[batch, position, d_vocab]`` from a bridge (a tensor) or an HF model (``.logits``)."""
    out = model(tokens)
    return out if isinstance(out, torch.Tensor) else out.logits


def rotate_queries_and_keys(model, layer: int, q: torch.Tensor, k: torch.Tensor):
    """Queries and keys ``[position, head, d_head]`` as the attention scores see them.

    A rotary model turns each query and key by an angle proportional to its position before
    taking dot products; ``hook_q`` and ``hook_k`` hold them *before* that turn. This applies
    the model's own rotation (native zoo models). Models with other position embeddings get
    ``q`` and ``k`` back unchanged.
    """
    if getattr(model.cfg, "positional_embedding_type", "standard") != "rotary":
        return q, k
    rotary = getattr(getattr(model.blocks[layer].attn, "original_component", None), "rotary", None)
    if rotary is None or not hasattr(rotary, "apply_rope"):
        raise NotImplementedError(
            f"{model.cfg.model_name}: rotating queries and keys by hand is only supported for the "
            "attention-only zoo models; read the scores from hook_attn_scores instead"
        )
    q_rot, k_rot = rotary.apply_rope(q.transpose(0, 1)[None], k.transpose(0, 1)[None])
    return q_rot[0].transpose(0, 1), k_rot[0].transpose(0, 1)


def norm_weight(model, layer: int | None = None) -> torch.Tensor:
    """[d_model]: the weights of a norm, which the bridge keeps apart from the matrices that read
    its output (they are not folded into ``W_gate``, ``W_in`` or ``W_U``): block ``layer``'s
    norm before its MLP (``ln2``), or the final norm when ``layer`` is None."""
    norm = model.ln_final if layer is None else model.blocks[layer].ln2
    return norm.original_component.weight.detach()


def corpus_of(name: str) -> str:
    """The corpus a zoo model was trained on (``storyworld``, ``countdown`` or ``beliefs``): it picks the tokenizer."""
    spec = registry.ZOO[name].spec if name in registry.ZOO else None
    return spec.corpus if spec is not None else "storyworld"


def zoo() -> list[str]:
    """Names of the zoo models present in ``data/models``."""
    return [n for n in ZOO if (paths.MODELS / n / "card.json").exists()]


def rebuild_command(name: str) -> str:
    return f"python -m utils.model_zoo.train {name}"


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def restore_hint(path: Path) -> str:
    return f"restore it with `git checkout -- {paths.shown(path)}`"


# What every card must hold for load_model to check and boot the weights.
CARD_KEYS = ("weights_sha256", "format")
CARD_FORMATS = ("hf", "native")  # a Hugging Face folder (config.json), or TransformerLens's own config


def _read_json(path: Path, what: str, fix: str):
    """The JSON in ``path``, or a ``ZooError`` naming ``what`` it is, where it breaks and ``fix``."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        where = f"line {e.lineno} column {e.colno}: {e.msg}" if isinstance(e, json.JSONDecodeError) else "not UTF-8"
        raise ZooError(
            f"{what} is not valid JSON ({paths.shown(path)}, {where}); {restore_hint(path)} or {fix}"
        ) from None


def read_card(name: str, folder: Path | None = None) -> dict:
    """The model card (``card.json``) of a zoo model, from ``folder`` (default
    ``data/models/<name>``); ``ZooError`` says how to fix a bad one."""
    path = Path(folder or paths.MODELS / name) / "card.json"
    rewrite = f"python -m utils.cards.model_cards {name} --write-card"
    if not path.exists():
        raise ZooError(f"zoo model {name!r} has no card at {path}. Rebuild it with: {rebuild_command(name)}")
    card = _read_json(path, f"the card of {name}", f"rewrite it with: {rewrite}")
    missing = [k for k in CARD_KEYS if not isinstance(card, dict) or k not in card]
    if missing:
        raise ZooError(
            f"the card of {name} ({paths.shown(path)}) lacks {', '.join(missing)}; "
            f"{restore_hint(path)} or rewrite it with: {rewrite}"
        )
    if card["format"] not in CARD_FORMATS:
        raise ZooError(
            f"the card of {name} ({paths.shown(path)}) gives the weights' format as {card['format']!r}, not one of "
            f"{', '.join(CARD_FORMATS)}; {restore_hint(path)} or rewrite it with: {rewrite}"
        )
    return card


def load_model(name: str, device: str | None = None, *, verify: bool = True, folder: Path | None = None):
    """A ``TransformerBridge`` for a zoo model (offline) or a hub model (by name).

    ``folder`` loads a zoo model's weights and card from another directory than
    ``data/models/<name>`` (a training run written with ``--out``).

    Zoo weights are checked against the sha256 on the model card; a mismatch or a missing
    file raises ``ZooError`` with the command that rebuilds the model. An unknown name
    that the hub cannot supply raises ``ValueError`` listing the zoo.
    """
    if not isinstance(name, str) or not name.strip():
        raise ValueError(
            f"load_model needs a model's name, a string such as 'storyworld-4l', not {name!r}; the zoo: "
            f"{', '.join(zoo()) or 'nothing built yet'}; hub names: {', '.join(sorted(HUB_ALIASES))}"
        )
    device = check_device(device)
    if name in ZOO:
        return _load_zoo(name, device, verify, folder)
    if Path(name).expanduser().is_dir() and folder is None:
        return _load_folder(Path(name).expanduser(), device)
    if folder is not None:
        raise ValueError(
            f"folder= loads a zoo model's own files (a training run's --out), and {name!r} is not a zoo model; "
            f"the zoo: {', '.join(ZOO)}"
        )
    if name.startswith(("storyworld", "countdown", "beliefs")) or difflib.get_close_matches(name, ZOO, 1, 0.8):
        raise ValueError(_unknown(name, "it looks like a zoo name, so the hub was not asked"))
    near = difflib.get_close_matches(name, HUB_ALIASES, 1, 0.85)
    if near and name not in HUB_ALIASES and "/" not in name:
        raise ValueError(
            f"unknown model {name!r} (did you mean {near[0]!r}?): the hub names the course knows are "
            f"{', '.join(sorted(HUB_ALIASES))}, or any hub id such as 'EleutherAI/pythia-70m'; the zoo loads "
            f"offline: {', '.join(zoo()) or 'nothing built yet'}"
        )
    return _load_hub(name, device)


def _unknown(name: str, why: str) -> str:
    """One sentence: the name, why it did not load, what loads instead."""
    close = difflib.get_close_matches(name, ZOO, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    planned = [n for n in ZOO if n not in zoo()]
    later = f"; planned, not built yet: {', '.join(planned)}" if planned else ""
    return (
        f"unknown model {name!r}{hint}: {why}; the embedded zoo loads offline "
        f"({', '.join(zoo()) or 'nothing built yet'}{later}), other names come from the "
        f"Hugging Face hub ({', '.join(sorted(HUB_ALIASES))}, or any hub id)"
    )


def _load_zoo(name: str, device: str, verify: bool, folder: Path | None = None):
    from safetensors import SafetensorError
    from safetensors.torch import load_file
    from transformer_lens.model_bridge import TransformerBridge

    folder = Path(folder or paths.MODELS / name)
    corpus = corpus_of(name)
    weights = folder / "model.safetensors"
    if not weights.exists():
        built = ", ".join(zoo()) or "none"
        raise ZooError(
            f"zoo model {name!r} is not built: {weights} is missing (built: {built}). "
            f"Rebuild it with: {rebuild_command(name)}"
        )
    card = read_card(name, folder)
    config = folder / "config.json"
    if not config.is_file():
        raise ZooError(
            f"zoo model {name!r} is incomplete: {paths.shown(config)} is missing; "
            f"{restore_hint(config)} or rebuild the model with: {rebuild_command(name)}"
        )
    settings = _read_json(
        config, f"the config of zoo model {name!r}", f"rebuild the model with: {rebuild_command(name)}"
    )
    if verify:
        digest = sha256_file(weights)
        if digest != card["weights_sha256"]:
            raise ZooError(
                f"{weights} does not match its model card (sha256 {digest[:12]}… != "
                f"{card['weights_sha256'][:12]}…): the file is corrupt or from another run. "
                f"Restore it with `git checkout -- {paths.shown(weights)}` "
                f"or rebuild it with: {rebuild_command(name)}"
            )
        if card.get("tokenizer_sha256") != corpus_tokenizer_hash(corpus):
            where = paths.shown(corpus_tokenizer_dir(corpus))
            raise ZooError(
                f"{name} was trained with another tokenizer than {where}. "
                f"Restore {where} or rebuild with: {rebuild_command(name)}"
            )
    tokenizer = corpus_tokenizer(corpus)
    try:
        if card["format"] == "native":
            from transformer_lens.config import TransformerBridgeConfig

            cfg = TransformerBridgeConfig(**settings)
            with _quiet():
                model = TransformerBridge.boot_native(cfg, tokenizer=tokenizer, device="cpu")
            state = {k: v.float() for k, v in load_file(weights).items()}
            model.load_state_dict(state, strict=True)
            with _quiet():  # the bridge prints "Moving model to device"
                model = model.to(device)
        else:
            with _quiet():
                model = TransformerBridge.boot_transformers(
                    str(folder), device=device, tokenizer=tokenizer, dtype=torch.float32
                )
            _fuse_tanh_gelu(model)
    except (SafetensorError, OSError, KeyError, ValueError, RuntimeError) as e:
        raise ZooError(f"could not load {name} from {folder}: {e}. Rebuild it with: {rebuild_command(name)}") from e
    model.eval()
    return model


def _load_folder(folder: Path, device: str):
    """A model saved in the hub's format (``save_pretrained``: config.json, safetensors weights and
    a tokenizer) in a local folder, loaded exactly as its hub name would load, without the hub."""
    from transformer_lens.model_bridge import TransformerBridge
    from transformers import AutoModelForCausalLM, AutoTokenizer

    where = paths.shown(folder)
    if not (folder / "config.json").is_file():
        raise ValueError(
            f"{where} is a folder but holds no config.json: load_model takes a zoo name, a hub name, or a folder "
            "written by save_pretrained (config.json, model.safetensors and the tokenizer's files)"
        )
    if not list(folder.glob("*.safetensors")):
        pickled = sorted(p.name for p in folder.glob("*.bin")) + sorted(p.name for p in folder.glob("*.pt"))
        raise ValueError(
            f"{where} holds no safetensors weights"
            + (f" (only {', '.join(pickled)}, which the course never unpickles)" if pickled else "")
            + ": save the model with save_pretrained(folder, safe_serialization=True)"
        )
    with _quiet(), _hub_offline():
        tokenizer = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
        hf_model = AutoModelForCausalLM.from_pretrained(
            str(folder),
            local_files_only=True,
            use_safetensors=True,
            trust_remote_code=False,
            dtype=torch.float32,
            attn_implementation="eager",  # the attention pattern's hook needs the written-out softmax
        ).to(device)
        overrides, note = ungroup_key_value_heads(hf_model, where)
        model = TransformerBridge.boot_transformers(
            str(folder),
            device=device,
            tokenizer=tokenizer,
            hf_model=hf_model,
            dtype=torch.float32,
            hf_config_overrides=overrides,
        )
    if note:
        print(note)
    model.eval()
    return model


def ungroup_key_value_heads(hf_model, name: str) -> tuple[dict | None, str]:
    """Give every query head its own key and value head, in place: the bridge's config overrides
    that say so, and a sentence for the learner.

    Llama-3, Gemma-2 and Qwen2 use grouped-query attention: each key/value head serves a group of
    query heads, so ``hook_k`` and ``hook_v`` would have fewer heads than ``hook_q`` and a lesson's
    per-head code would not line up. Repeating each key/value projection once per query head of its
    group computes exactly the same attention (HF's ``repeat_kv`` does the same at run time) with
    every head's key and value in its own slot, as TransformerLens's
    ``ungroup_grouped_query_attention`` does. Costs the memory of the repeated projections only.
    Returns ``(None, "")`` for a model whose heads are not grouped.
    """
    config = hf_model.config
    heads = getattr(config, "num_attention_heads", None)
    kv_heads = getattr(config, "num_key_value_heads", None) or heads
    if not heads or kv_heads == heads:
        return None, ""
    groups = heads // kv_heads

    def repeated(param: torch.Tensor) -> torch.Tensor:  # [kv_heads · d_head, ...] -> [heads · d_head, ...]
        return param.detach().unflatten(0, (kv_heads, -1)).repeat_interleave(groups, 0).flatten(0, 1)

    for module in hf_model.modules():
        if not (hasattr(module, "num_key_value_groups") and hasattr(module, "k_proj")):
            continue
        for part in ("k_proj", "v_proj"):
            old = getattr(module, part)
            new = torch.nn.Linear(
                old.in_features, old.out_features * groups, bias=old.bias is not None, dtype=old.weight.dtype
            )
            new = new.to(old.weight.device)
            new.weight.data = repeated(old.weight)
            if old.bias is not None:
                new.bias.data = repeated(old.bias)
            setattr(module, part, new)
        module.num_key_value_groups = 1
    config.num_key_value_heads = heads
    note = (
        f"{name} uses grouped-query attention ({kv_heads} key/value heads for {heads} query heads): each query "
        f"head now has its own copy of its group's key and value, so hook_k and hook_v have {heads} heads like "
        "hook_q (the same computation)"
    )
    return {"num_key_value_heads": heads}, note


def _fuse_tanh_gelu(model) -> None:
    """Compute the zoo's GPT-2 activation (``gelu_new``) with torch's fused tanh GELU.

    Both are 0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³))); transformers writes ``gelu_new`` as six
    tensor operations, which take about 40% of a forward pass of ``storyworld-4l`` on a CPU.
    Logits move by less than 1e-4; the model's config (``act_fn``) and its hooks are unchanged.
    """
    from transformers.activations import GELUTanh, NewGELUActivation

    for name, module in list(model.named_modules()):
        if isinstance(module, NewGELUActivation):
            parent, _, attr = name.rpartition(".")
            setattr(model.get_submodule(parent), attr, GELUTanh())


HUB_PROBE_TIMEOUT = 5.0  # seconds one look at the hub may take before it counts as unreachable


def hub_unreachable(timeout: float = HUB_PROBE_TIMEOUT) -> str | None:
    """Why the Hugging Face hub cannot be reached, or ``None`` when it answers.

    One request, no retries: the hub library retries a refused connection with back-off
    for every file it looks for, which takes minutes without a network.
    """
    from huggingface_hub import constants
    from huggingface_hub.utils import get_session

    try:
        get_session().head(constants.ENDPOINT, timeout=timeout, follow_redirects=False)
    except Exception as e:  # no network, DNS, proxy, TLS: all mean the same here
        return f"{type(e).__name__}: {str(e).splitlines()[0][:120] if str(e) else 'no answer'}"
    return None


@contextlib.contextmanager
def _hub_offline():
    """Let the hub library use only its local cache (it reads this flag on every call)."""
    from huggingface_hub import constants

    was = constants.HF_HUB_OFFLINE
    constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        constants.HF_HUB_OFFLINE = was


def _load_hub(name: str, device: str):
    from huggingface_hub import constants
    from transformer_lens.model_bridge import TransformerBridge

    hub_id = HUB_ALIASES.get(name, name)
    # HF_HUB_OFFLINE may have been set after the hub library read it; honour it either way.
    offline = constants.HF_HUB_OFFLINE or os.environ.get("HF_HUB_OFFLINE", "").upper() in ("1", "ON", "YES", "TRUE")
    # Without a network, look only in the local cache instead of retrying for minutes.
    unreachable = None if offline else hub_unreachable()
    try:
        with _quiet(), _hub_offline() if offline or unreachable else contextlib.nullcontext():
            from transformers import AutoModelForCausalLM

            hf_model = AutoModelForCausalLM.from_pretrained(
                hub_id, use_safetensors=True, trust_remote_code=False, dtype=torch.float32, attn_implementation="eager"
            ).to(device)
            overrides, note = ungroup_key_value_heads(hf_model, name)
            model = TransformerBridge.boot_transformers(
                hub_id, device=device, hf_model=hf_model, dtype=torch.float32, hf_config_overrides=overrides
            )
    except Exception as e:  # offline, unknown repo, gated model: all end the same way
        if (offline or unreachable) and (name in HUB_ALIASES or "/" in name):
            why = (f"the hub at {constants.ENDPOINT} cannot be reached ({unreachable})" if unreachable
                   else "HF_HUB_OFFLINE=1 is set")  # fmt: skip
            raise ValueError(
                f"{name!r} is a Hugging Face hub model ({hub_id}) that is not in this machine's hub cache, and "
                f"{why}: connect once to download it (it is cached after that), or pass the path of a folder "
                f"holding its files; the zoo loads offline: {', '.join(zoo()) or 'nothing built yet'}"
            ) from None
        if unreachable:
            why = f"the hub at {constants.ENDPOINT} cannot be reached ({unreachable}) and the model is not cached"
            raise ValueError(_unknown(name, why)) from None
        flag = " (HF_HUB_OFFLINE=1 is set)" if offline else ""
        first = str(e).splitlines()[0][:200] if str(e) else ""
        raise ValueError(_unknown(name, f"loading it from the hub failed{flag}: {type(e).__name__}: {first}")) from None
    if note:
        print(note)
    model.eval()
    return model


@contextlib.contextmanager
def _quiet():
    """Hide the HF 'Loading weights' progress bar while booting a checkpoint."""
    from transformers.utils import logging as hf_logging

    was = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        with contextlib.redirect_stderr(io.StringIO()), contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        if was:
            hf_logging.enable_progress_bar()
