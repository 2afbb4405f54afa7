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
import errno
import hashlib
import io
import json
import os
import re
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

import torch

from utils import paths
from utils.corpora.tokenizer import corpus_tokenizer, corpus_tokenizer_dir, corpus_tokenizer_hash
from utils.model_zoo import pretrained, registry

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
    **pretrained.HUB_ORIGINALS,  # the published SmolLM2 weights; the course's offline copy is "smollm2-135m"
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


def rebuild_command(name: str, folder: Path | None = None) -> str:
    """The command that trains zoo model ``name`` again into ``folder``: by default the zoo's own
    copy, which training replaces only when told to (``--replace-zoo-model``)."""
    if folder is not None and Path(folder).resolve() != (paths.MODELS / name).resolve():
        return f"python -m utils.model_zoo.train {name} --out {paths.shown(folder)}"
    return f"python -m utils.model_zoo.train {name} --replace-zoo-model"


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
        raise ZooError(f"zoo model {name!r} has no card at {path}. Rebuild it with: {rebuild_command(name, folder)}")
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
    if name in pretrained.PRETRAINED and folder is None:
        return _load_folder(pretrained.ensure(), device, shown_as=name)
    path = Path(name).expanduser()
    if path.is_file() and folder is None:
        raise ValueError(_not_a_folder(path))
    if path.is_dir() and folder is None:
        return _load_folder(path, device)
    if folder is not None:
        raise ValueError(
            f"folder= loads a zoo model's own files (a training run's --out), and {name!r} is not a zoo model; "
            f"the zoo: {', '.join(ZOO)}"
        )
    offline = (*ZOO, *pretrained.PRETRAINED)
    if name not in HUB_ALIASES and (
        name.lower().startswith(("storyworld", "countdown", "beliefs", "smollm"))
        or difflib.get_close_matches(name, offline, 1, 0.8)
    ):
        raise ValueError(_unknown(name, "it looks like a zoo name, so the hub was not asked"))
    if not looks_like_hub_id(name) and (name.startswith(("~", ".")) or "/" in name or "\\" in name):
        raise ValueError(
            f"there is no file or folder {name}: load_model takes a zoo name, a hub name, or a folder written by "
            "save_pretrained (config.json, model.safetensors and the tokenizer's files)"
        )
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
    close = difflib.get_close_matches(name.lower(), (*ZOO, *pretrained.PRETRAINED), n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    planned = [n for n in ZOO if n not in zoo()]
    later = f"; planned, not built yet: {', '.join(planned)}" if planned else ""
    return (
        f"unknown model {name!r}{hint}: {why}; the embedded zoo loads offline "
        f"({', '.join(zoo()) or 'nothing built yet'}{later}), and so does {', '.join(pretrained.PRETRAINED)} "
        f"(pretrained elsewhere, fetched by make setup); other names come from the "
        f"Hugging Face hub ({', '.join(sorted(HUB_ALIASES))}, or any hub id)"
    )


def _load_zoo(name: str, device: str, verify: bool, folder: Path | None = None):
    from safetensors import SafetensorError
    from safetensors.torch import load_file
    from transformer_lens.model_bridge import TransformerBridge

    folder = Path(folder or paths.MODELS / name)
    corpus = corpus_of(name)
    weights = folder / "model.safetensors"
    rebuild = rebuild_command(name, folder)  # into the folder that was asked for

    if not weights.exists():
        built = ", ".join(zoo()) or "none"
        raise ZooError(
            f"zoo model {name!r} is not built: {weights} is missing (built: {built}). Rebuild it with: {rebuild}"
        )
    card = read_card(name, folder)
    config = folder / "config.json"
    if not config.is_file():
        raise ZooError(
            f"zoo model {name!r} is incomplete: {paths.shown(config)} is missing; "
            f"{restore_hint(config)} or rebuild the model with: {rebuild}"
        )
    settings = _read_json(config, f"the config of zoo model {name!r}", f"rebuild the model with: {rebuild}")
    if verify:
        digest = sha256_file(weights)
        if digest != card["weights_sha256"]:
            raise ZooError(
                f"{weights} does not match its model card (sha256 {digest[:12]}… != "
                f"{card['weights_sha256'][:12]}…): the file is corrupt or from another run. "
                f"Restore it with `git checkout -- {paths.shown(weights)}` "
                f"or rebuild it with: {rebuild}"
            )
        if card.get("tokenizer_sha256") != corpus_tokenizer_hash(corpus):
            where = paths.shown(corpus_tokenizer_dir(corpus))
            raise ZooError(
                f"{name} was trained with another tokenizer than {where}. Restore {where} or rebuild with: {rebuild}"
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
        raise ZooError(f"could not load {name} from {folder}: {e}. Rebuild it with: {rebuild}") from e
    model.eval()
    return model


def _load_folder(folder: Path, device: str, shown_as: str | None = None):
    """A model saved in the hub's format (``save_pretrained``: config.json, safetensors weights and
    a tokenizer) in a local folder, loaded exactly as its hub name would load, without the hub.

    What would load wrongly or fail deep inside transformers is refused first, in one sentence:
    GGUF files, a missing tokenizer, a model type the pinned transformers does not know, empty or
    cut-off weights, and weights whose shapes do not fit config.json."""
    from transformer_lens.model_bridge import TransformerBridge
    from transformers import AutoModelForCausalLM, AutoTokenizer

    where = shown_as or paths.shown(folder)  # a model loaded by name is named so in its messages
    weights = sorted(folder.glob("*.safetensors"))
    ggufs = sorted(folder.glob("*.gguf"))
    if ggufs and not weights:
        raise ValueError(
            f"{where} holds {ggufs[0].name}, a GGUF file, which load_model does not load directly"
            + _gguf_conversion(ggufs[0])
        )
    if not (folder / "config.json").is_file():
        raise ValueError(
            f"{where} is a folder but holds no config.json: load_model takes a zoo name, a hub name, or a folder "
            "written by save_pretrained (config.json, model.safetensors and the tokenizer's files)"
        )
    if not weights:
        pickled = sorted(p.name for p in folder.glob("*.bin")) + sorted(p.name for p in folder.glob("*.pt"))
        raise ValueError(
            f"{where} holds no safetensors weights"
            + (f" (only {', '.join(pickled)}, which the course never unpickles)" if pickled else "")
            + ": save the model with save_pretrained(folder, safe_serialization=True)"
        )
    config = _folder_config(folder)
    _check_tokenizer_files(folder, config)
    for path in weights:
        problem = safetensors_problem(path)
        if problem:
            raise ValueError(
                f"{paths.shown(path)} is {problem}: save the model again with "
                "save_pretrained(folder, safe_serialization=True), or copy the file again"
            )
    try:
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
    except Exception:
        misfits = _misfits(folder)  # the loader's own report of them goes to the hidden output
        if misfits:
            key, found, wanted, file = misfits[0]
            more = f" (and {len(misfits) - 1} more)" if len(misfits) > 1 else ""
            raise ValueError(
                f"the weights in {where} do not fit its config.json: {key} is {_shape(found)} in {file} but "
                f"{_shape(wanted)} by config.json{more}; config.json must describe the model the weights were "
                "saved from (save both with save_pretrained)"
            ) from None
        raise
    if len(tokenizer) <= len(set(tokenizer.all_special_ids)):
        raise ValueError(_no_tokenizer(folder, config, "has tokenizer files that hold no vocabulary"))
    with _quiet(), _hub_offline():
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


GGUF_MAGIC = b"GGUF"
# Files a saved tokenizer is read from (the fast tokenizer's file, GPT-2-style BPE, SentencePiece, WordPiece).
TOKENIZER_FILES = ("tokenizer.json", "vocab.json", "tokenizer.model", "spiece.model", "vocab.txt")


def _is_gguf(path: Path) -> bool:
    if path.suffix.lower() == ".gguf":
        return True
    try:
        with open(path, "rb") as f:
            return f.read(4) == GGUF_MAGIC
    except OSError:
        return False


def _gguf_conversion(path: Path) -> str:
    """': convert it once ...': how to turn the GGUF file ``path`` into a folder load_model takes."""
    folder, file = str(path.absolute().parent), path.name
    return (
        f": convert it once with transformers (it needs the gguf package), "
        f"AutoModelForCausalLM.from_pretrained('{folder}', gguf_file='{file}') and "
        f"AutoTokenizer.from_pretrained('{folder}', gguf_file='{file}'), then save both with "
        "save_pretrained(out) (the model with safe_serialization=True) and call load_model(out)"
    )


def _not_a_folder(path: Path) -> str:
    """One sentence for a path to a file: load_model takes folders."""
    if _is_gguf(path):
        return f"{paths.shown(path)} is a GGUF file, which load_model does not load directly{_gguf_conversion(path)}"
    beside = path.absolute().parent
    hint = f"; pass the folder that holds it: load_model('{beside}')" if (beside / "config.json").is_file() else ""
    return (
        f"{paths.shown(path)} is a file: load_model takes a folder written by save_pretrained (config.json, "
        f"model.safetensors and the tokenizer's files){hint}"
    )


def _folder_config(folder: Path) -> dict:
    """config.json of a save_pretrained folder, checked to name a causal language model that the
    installed transformers knows."""
    import transformers
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING_NAMES
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    path = folder / "config.json"
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        where = f"line {e.lineno} column {e.colno}: {e.msg}" if isinstance(e, json.JSONDecodeError) else "not UTF-8"
        raise ValueError(
            f"{paths.shown(path)} is not valid JSON ({where}): save the model again with save_pretrained(folder)"
        ) from None
    if not isinstance(config, dict):
        raise ValueError(f"{paths.shown(path)} holds no settings: save the model again with save_pretrained(folder)")
    kind = config.get("model_type")
    known = ", ".join(
        k for k in ("gpt2", "llama", "gemma2", "qwen2", "mistral") if k in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES
    )
    which = (
        f"load_model loads the causal language models it knows, such as {known} "
        f"({len(MODEL_FOR_CAUSAL_LM_MAPPING_NAMES)} in all: "
        "transformers.models.auto.modeling_auto.MODEL_FOR_CAUSAL_LM_MAPPING_NAMES)"
    )
    if isinstance(kind, str) and kind not in CONFIG_MAPPING_NAMES:
        raise ValueError(
            f"{paths.shown(path)} gives the model type {kind!r}, which transformers {transformers.__version__} "
            f"(the version the course pins, in utils/course/versions.py) does not know: {which}"
        )
    if isinstance(kind, str) and kind not in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES:
        raise ValueError(
            f"{paths.shown(path)} gives the model type {kind!r}, which is not a causal language model "
            f"(one that predicts the next token): {which}"
        )
    return config


def _no_tokenizer(folder: Path, config: dict, what: str) -> str:
    """One sentence: ``folder`` has no usable tokenizer; how to add one (the course's, when the
    model's vocabulary is the size of one of the course's tokenizers)."""
    from utils.corpora.tokenizer import CORPORA

    vocab = config.get("vocab_size") or config.get("d_vocab") or (config.get("text_config") or {}).get("vocab_size")
    course = ""
    for corpus in CORPORA:
        try:
            size = len(corpus_tokenizer(corpus))
        except Exception:  # a missing course tokenizer says so where it is used
            continue
        if size == vocab:
            course = (
                f"; its vocabulary ({vocab} tokens) is the size of the course's {corpus} tokenizer: if it was "
                f"trained with it, corpus_tokenizer('{corpus}').save_pretrained('{folder.absolute()}') adds it "
                "(from utils.corpora.tokenizer)"
            )
            break
    return (
        f"{paths.shown(folder)} {what}, so every text would become end-of-text tokens: add the tokenizer the "
        f"model was trained with, tokenizer.save_pretrained('{folder.absolute()}'){course}"
    )


def _check_tokenizer_files(folder: Path, config: dict) -> None:
    if not any((folder / name).is_file() for name in TOKENIZER_FILES):
        raise ValueError(
            _no_tokenizer(folder, config, "holds no tokenizer files (tokenizer.json, vocab.json, or tokenizer.model)")
        )


def safetensors_problem(path: Path) -> str | None:
    """Why ``path`` is not a whole safetensors file ("empty (0 bytes)", "cut off (...)", ...), from
    its size and its header alone; ``None`` when it is whole."""
    try:
        size = path.stat().st_size
        if size == 0:
            return "empty (0 bytes)"
        with open(path, "rb") as f:
            head = f.read(8)
            if len(head) < 8:
                return f"cut off ({size} bytes, shorter than a safetensors header)"
            length = int.from_bytes(head, "little")
            if length > 100_000_000:
                return "not a safetensors file (its first bytes give no header length)"
            if 8 + length > size:
                return f"cut off ({size:,} bytes, shorter than its own header)"
            header = json.loads(f.read(length))
        end = max((v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"), default=0)
    except (ValueError, KeyError, TypeError, IndexError, AttributeError):
        return "not a safetensors file (its header cannot be read)"
    except OSError as e:
        return f"unreadable ({e.strerror or e})"
    if 8 + length + end > size:
        return f"cut off ({size:,} of its {8 + length + end:,} bytes)"
    return None


def _shape(shape) -> str:
    return f"[{', '.join(str(n) for n in shape)}]"


def _misfits(folder: Path) -> list[tuple[str, list, list, str]]:
    """(name, shape in the file, shape config.json gives, file) of each weight whose shape is not
    the one the model built from ``folder``'s config.json has; [] when all fit or it cannot tell."""
    from safetensors import safe_open
    from transformers import AutoConfig, AutoModelForCausalLM

    try:
        with _quiet(), _hub_offline():
            config = AutoConfig.from_pretrained(str(folder), local_files_only=True, trust_remote_code=False)
            with torch.device("meta"):
                model = AutoModelForCausalLM.from_config(config)
        wanted = {k: list(v.shape) for k, v in model.state_dict().items()}
        found = {}
        for path in sorted(folder.glob("*.safetensors")):
            with safe_open(str(path), "pt") as f:
                for key in f.keys():
                    found[key] = (list(f.get_slice(key).get_shape()), path.name)
    except Exception:
        return []
    return [(k, found[k][0], shape, found[k][1]) for k, shape in wanted.items() if k in found and found[k][0] != shape]


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


# A hub id: a name, or an owner and a name, of letters, digits, '-', '_' and '.' (as the hub allows them).
_HUB_ID = re.compile(r"(?:[A-Za-z0-9][\w.-]{0,95}/)?[A-Za-z0-9][\w.-]{0,95}")


def looks_like_hub_id(name: str) -> bool:
    """Whether ``name`` has the shape of a Hugging Face hub id (``gpt2``, ``EleutherAI/pythia-70m``)."""
    return bool(_HUB_ID.fullmatch(name)) and ".." not in name and not name.endswith(".")


def _hub_cached(hub_id: str) -> bool:
    """Whether this machine's hub cache holds ``hub_id``'s config (looked up without the network)."""
    from huggingface_hub import try_to_load_from_cache

    try:
        return isinstance(try_to_load_from_cache(hub_id, "config.json"), str)
    except Exception:  # not a valid id, or no cache at all
        return False


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
        flag = " (HF_HUB_OFFLINE=1 is set)" if offline else ""
        first = str(e).splitlines()[0][:200] if str(e) else ""
        failed = f"{type(e).__name__}: {first}"
        if (offline or unreachable) and _hub_cached(hub_id):
            raise ValueError(f"{name!r} is in this machine's hub cache but did not load{flag}: {failed}") from None
        if offline or unreachable:
            why = (f"the hub at {constants.ENDPOINT} cannot be reached ({unreachable})" if unreachable
                   else "HF_HUB_OFFLINE=1 is set")  # fmt: skip
            fix = (
                f"connect once to download it (it is cached after that), or pass the path of a folder holding its "
                f"files; the zoo loads offline: {', '.join(zoo()) or 'nothing built yet'}, and so does "
                f"{', '.join(pretrained.PRETRAINED)} (pretrained elsewhere)"
            )
            if name in HUB_ALIASES or hub_id in HUB_ALIASES.values() or "/" in name:
                raise ValueError(
                    f"{name!r} is a Hugging Face hub model ({hub_id}) that is not in this machine's hub cache, and "
                    f"{why}: {fix}"
                ) from None
            if offline and looks_like_hub_id(name):  # the hub was not asked, so the name is not known to be wrong
                raise ValueError(
                    f"{name!r} is not a zoo model or a folder here, so it would come from the Hugging Face hub, but it "
                    f"is not in this machine's hub cache, and {why}: {fix}"
                ) from None
        if unreachable:
            why = f"the hub at {constants.ENDPOINT} cannot be reached ({unreachable}) and the model is not cached"
            raise ValueError(_unknown(name, why)) from None
        raise ValueError(_unknown(name, f"loading it from the hub failed{flag}: {failed}")) from None
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


# ---------------------------------------------------------------------------------------
# Writing a model's or an SAE's folder (training's side of the same files)

STAGING = ".writing-"  # the hidden folder inside the output folder where its new files are written first


def file_mode() -> int:
    """The permissions a new file gets under this process's umask (0644 under the usual 022):
    safetensors writes its files as 0600 whatever the umask."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def disk_full(error: BaseException) -> bool:
    """Whether ``error`` (an ``OSError``, or safetensors' own error) says the disk is full."""
    return (isinstance(error, OSError) and error.errno == errno.ENOSPC) or "No space left on device" in str(error)


def write_problem(error: BaseException, folder: Path) -> str | None:
    """'the disk holding <folder> is full' or 'could not write to <folder> (<why>)' for an error
    raised while writing there; ``None`` when ``error`` is not about writing files."""
    if disk_full(error):
        return f"the disk holding {paths.shown(folder)} is full"
    if isinstance(error, OSError):
        return f"could not write to {paths.shown(folder)} ({error.strerror or error})"
    return None


def write_folder(out: Path, write: Callable[[Path], None]) -> Path:
    """Call ``write(staging)`` to write files into an empty hidden folder inside ``out``, then give
    them the umask's permissions and move each over its namesake in ``out`` (a rename: the files
    already there are replaced whole). If ``write`` fails (a full disk...), nothing in ``out``
    changes and the hidden folder is removed, as is ``out`` when this made it."""
    made = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=STAGING, dir=out))
    try:
        write(staging)
        mode = file_mode()
        for path in sorted(staging.iterdir()):
            path.chmod(mode)
            os.replace(path, out / path.name)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        if made:
            shutil.rmtree(out, ignore_errors=True)
        raise
    staging.rmdir()
    return out


def earlier_run_of(folder: Path, name: str) -> bool:
    """Whether ``folder`` holds what training ``name`` writes (its ``training.json`` names it)."""
    try:
        training = json.loads((folder / "training.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(training, dict) and training.get("name") == name


def output_problem(out: Path, name: str, zoos_own: Path, replace: bool, flag: str, default: Path) -> str | None:
    """Why training ``name`` must not write into ``out`` (``None`` when it may): ``out`` is the zoo's
    own copy ``zoos_own`` and ``replace`` (the command's ``flag``) was not given, or ``out`` already
    holds files this training did not write (anything but an earlier run of ``name``). ``default``
    is where the command writes without ``--out``."""
    if out.resolve() == zoos_own.resolve():
        if replace:
            return None
        return (
            f"{paths.shown(out)} is the zoo's own {name}, which the lessons load: leave out --out to train into "
            f"{paths.shown(default)}, or pass {flag} to replace the zoo's copy"
        )
    if not out.is_dir() or earlier_run_of(out, name):
        return None
    others = sorted(p.name for p in out.iterdir() if not p.name.startswith(STAGING))
    if not others:
        return None
    listed = ", ".join(others[:3]) + (f" and {len(others) - 3} more" if len(others) > 3 else "")
    return (
        f"{paths.shown(out)} already holds files this training did not write ({listed}): name a new or empty "
        "folder with --out, or move those files away"
    )
