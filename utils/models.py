"""Load a model by name: zoo models from ``data/models``, anything else from the hub.

    >>> from utils import load_model
    >>> model = load_model("storyworld-4l")     # offline, from data/models/storyworld-4l
    >>> model = load_model("gpt2-small")        # from the Hugging Face hub (needs network)

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

from utils import paths, registry
from utils.tokenizer import load_tokenizer, tokenizer_hash

# Zoo models the course plans (``utils.registry``); those without a directory are not built yet.
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
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return "mps"
    return "cpu"


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


def zoo() -> list[str]:
    """Names of the zoo models present in ``data/models``."""
    return [n for n in ZOO if (paths.MODELS / n / "card.json").exists()]


def rebuild_command(name: str) -> str:
    return f"python -m utils.train {name}"


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def read_card(name: str) -> dict:
    """The model card (``card.json``) of a zoo model."""
    path = paths.MODELS / name / "card.json"
    if not path.exists():
        raise ZooError(f"zoo model {name!r} has no card at {path}. Rebuild it with: {rebuild_command(name)}")
    return json.loads(path.read_text())


def load_model(name: str, device: str | None = None, *, verify: bool = True):
    """A ``TransformerBridge`` for a zoo model (offline) or a hub model (by name).

    Zoo weights are checked against the sha256 on the model card; a mismatch or a missing
    file raises ``ZooError`` with the command that rebuilds the model. An unknown name
    that the hub cannot supply raises ``ValueError`` listing the zoo.
    """
    device = device or default_device()
    if name in ZOO:
        return _load_zoo(name, device, verify)
    if name.startswith(("storyworld", "countdown")) or difflib.get_close_matches(name, ZOO, 1, 0.8):
        raise ValueError(_unknown(name, "it looks like a zoo name, so the hub was not asked"))
    return _load_hub(name, device)


def _unknown(name: str, why: str) -> str:
    close = difflib.get_close_matches(name, ZOO, n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    planned = [n for n in ZOO if n not in zoo()]
    later = f" (planned, not built yet: {', '.join(planned)})" if planned else ""
    return (
        f"unknown model {name!r}.{hint} The embedded zoo has: {', '.join(zoo()) or 'nothing yet'}"
        f"{later}; these load offline. Other names are fetched from the Hugging Face hub "
        f"({', '.join(sorted(HUB_ALIASES))}, or any hub id), but {why}."
    )


def _load_zoo(name: str, device: str, verify: bool):
    from safetensors import SafetensorError
    from safetensors.torch import load_file
    from transformer_lens.model_bridge import TransformerBridge

    folder = paths.MODELS / name
    weights = folder / "model.safetensors"
    if not weights.exists():
        built = ", ".join(zoo()) or "none"
        raise ZooError(
            f"zoo model {name!r} is not built: {weights} is missing (built: {built}). "
            f"Rebuild it with: {rebuild_command(name)}"
        )
    card = read_card(name)
    if verify:
        digest = sha256_file(weights)
        if digest != card["weights_sha256"]:
            raise ZooError(
                f"{weights} does not match its model card (sha256 {digest[:12]}… != "
                f"{card['weights_sha256'][:12]}…): the file is corrupt or from another run. "
                f"Restore it with `git checkout -- {paths.shown(weights)}` "
                f"or rebuild it with: {rebuild_command(name)}"
            )
        if card.get("tokenizer_sha256") != tokenizer_hash():
            raise ZooError(
                f"{name} was trained with another tokenizer than data/tokenizer. "
                f"Restore data/tokenizer or rebuild with: {rebuild_command(name)}"
            )
    tokenizer = load_tokenizer()
    try:
        if card["format"] == "native":
            from transformer_lens.config import TransformerBridgeConfig

            cfg = TransformerBridgeConfig(**json.loads((folder / "config.json").read_text()))
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
    except (SafetensorError, OSError, KeyError, RuntimeError) as e:
        raise ZooError(f"could not load {name} from {folder}: {e}. Rebuild it with: {rebuild_command(name)}") from e
    model.eval()
    return model


def _load_hub(name: str, device: str):
    from transformer_lens.model_bridge import TransformerBridge

    hub_id = HUB_ALIASES.get(name, name)
    try:
        with _quiet():
            model = TransformerBridge.boot_transformers(hub_id, device=device)
    except Exception as e:  # offline, unknown repo, gated model: all end the same way
        offline = " (HF_HUB_OFFLINE=1 is set)" if os.environ.get("HF_HUB_OFFLINE") == "1" else ""
        first = str(e).splitlines()[0][:200] if str(e) else ""
        raise ValueError(
            _unknown(name, f"loading it from the hub failed{offline}: {type(e).__name__}: {first}")
        ) from None
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
