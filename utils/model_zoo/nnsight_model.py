"""The course's models through nnsight: ``load_nnsight(name)`` and the modules the appendix reads.

TransformerLens gives every architecture the same hook names (``blocks.1.hook_resid_post``).
nnsight gives you the Hugging Face model's own module tree, wrapped so that any module's input
and output can be read and written inside a ``with lm.trace(...)`` block: GPT-2's blocks are
``transformer.h``, Llama's ``model.layers``. The few functions here find the same parts in either.
The same code runs on NDIF's servers with ``remote=True``, for models no laptop holds:
``ndif_model(name)`` prepares one (its config and tokenizer from the hub, no weights), and stops in
one line, before anything is sent to NDIF, when the hub cannot give them.
"""

from __future__ import annotations

import os
import socket
from urllib.parse import urlparse

import torch

from utils import paths
from utils.corpora.tokenizer import corpus_tokenizer
from utils.model_zoo.models import HUB_ALIASES, ZOO, check_device, corpus_of, read_card


def hf_source(name: str) -> str:
    """Where the Hugging Face files of ``name`` are: a zoo model's folder, a hub id, or a folder."""
    if name in ZOO:
        if read_card(name)["format"] == "native":
            in_hf = [m for m in ZOO if (paths.MODELS / m / "card.json").exists() and read_card(m)["format"] != "native"]
            raise ValueError(
                f"{name} is stored in TransformerLens's own format, which nnsight cannot read; the zoo models "
                f"stored as Hugging Face checkpoints are {', '.join(in_hf)}"
            )
        return str(paths.MODELS / name)
    return HUB_ALIASES.get(name, name)


def load_nnsight(name: str, device: str | None = None):
    """``name`` (a zoo model, a hub name or a folder) as an nnsight ``TransformersModel``, its weights
    loaded on ``device`` in float32. A zoo model gets its corpus's tokenizer, as ``load_model`` gives it."""
    from nnsight.modeling.transformers import TransformersModel

    tokenizer = corpus_tokenizer(corpus_of(name)) if name in ZOO else None
    return TransformersModel(
        hf_source(name),
        task="text-generation",
        tokenizer=tokenizer,
        dispatch=True,  # load the weights now (without it nnsight waits for the first trace)
        dtype=torch.float32,
        device_map=check_device(device),
    )


HUB_PROBE_SECONDS = 5.0  # how long ndif_model waits for the hub to answer before saying it cannot be reached


class NDIFNotTried(RuntimeError):
    """The model to run on NDIF could not be prepared here, so nothing was sent to NDIF; a notebook
    shows the sentence as one red line."""

    def _render_traceback_(self) -> list[str]:  # IPython hook: no traceback, just the sentence
        return [f"\x1b[1;31m{self.args[0]}\x1b[0m"]


def _hub_unreachable() -> str | None:
    """Why the Hugging Face hub cannot be asked for files now (offline mode, or no answer within
    ``HUB_PROBE_SECONDS``), or None. One connection attempt: the hub's client retries for about 25 s."""
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        set_by = next((v for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE") if os.environ.get(v)), "HF_HUB_OFFLINE")
        return f"{set_by}={os.environ.get(set_by, '1')} is set: unset it to go online"
    url = urlparse(constants.ENDPOINT)
    try:
        port = url.port or (443 if url.scheme == "https" else 80)
        socket.create_connection((url.hostname, port), timeout=HUB_PROBE_SECONDS).close()
    except (OSError, ValueError) as e:
        why = e.strerror if isinstance(e, OSError) and e.strerror else str(e) or type(e).__name__
        return f"the hub at {constants.ENDPOINT} cannot be reached: {why}"
    return None


def ndif_model(name: str):
    """``name`` (a hub id) as an nnsight ``TransformersModel`` to trace on NDIF's servers
    (``lm.trace(..., remote=True)``): its config and tokenizer come from the hub (or the hub's cache),
    its weights stay on NDIF. When the hub cannot give them, ``NDIFNotTried`` says so in one sentence
    at once, and nothing has been sent to NDIF."""
    from huggingface_hub import try_to_load_from_cache
    from nnsight.modeling.transformers import TransformersModel

    not_sent = "so nothing was sent to NDIF"
    cached = isinstance(try_to_load_from_cache(name, "config.json"), str)
    if not cached and (why := _hub_unreachable()):
        raise NDIFNotTried(f"NDIF not tried: the config of {name} could not be fetched from the Hugging Face hub "
                           f"({why}), {not_sent}")  # fmt: skip
    try:
        return TransformersModel(name, task="text-generation")  # config and tokenizer only: no weights
    except OSError as e:  # the hub's errors reach here as OSError: gated, unknown, or the connection lost
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise NDIFNotTried(
            f"NDIF not tried: the config and tokenizer of {name} could not be fetched from the Hugging Face hub "
            f"({first}), {not_sent}"
        ) from None


def nnsight_twin(model):
    """The weights a ``TransformerBridge`` was loaded from, loaded again through nnsight on the same
    device with the same tokenizer: two ways into one model, for comparing them."""
    from nnsight.modeling.transformers import TransformersModel

    return TransformersModel(
        model.cfg.model_name,  # the folder or hub id the bridge booted from
        task="text-generation",
        tokenizer=model.tokenizer,
        dispatch=True,
        dtype=torch.float32,
        device_map=str(next(model.parameters()).device),
    )


def _inner(lm):
    """GPT-2 keeps its blocks under ``transformer``; Llama, Qwen2 and most others under ``model``."""
    return lm.transformer if hasattr(lm, "transformer") else lm.model


def blocks(lm) -> list:
    """The model's blocks, in order: ``transformer.h`` (GPT-2) or ``model.layers`` (Llama and kin)."""
    inner = _inner(lm)
    return inner.h if hasattr(inner, "h") else inner.layers


def attention(block):
    """A block's attention module: ``attn`` (GPT-2) or ``self_attn`` (Llama and kin). Its output
    is a pair: what it adds to the residual stream, then the attention pattern (or None)."""
    return block.attn if hasattr(block, "attn") else block.self_attn


def final_norm(lm):
    """The norm before the unembedding: ``transformer.ln_f`` (GPT-2) or ``model.norm``."""
    inner = _inner(lm)
    return inner.ln_f if hasattr(inner, "ln_f") else inner.norm


def embeddings(lm) -> list:
    """The modules that write the residual stream before the first block: the token embedding, and
    GPT-2's learned positions (a rotary model has none: it turns queries and keys instead)."""
    inner = _inner(lm)
    if hasattr(inner, "wte"):
        return [inner.wte, inner.wpe]
    return [inner.embed_tokens]


def final_norm_settings(lm) -> tuple[torch.Tensor, torch.Tensor | None, float, bool]:
    """``(weight, bias, eps, centred)`` of the final norm: GPT-2's LayerNorm subtracts the mean and has a
    bias (``centred``); Llama's and Qwen2's RMSNorm only divide by the root mean square and multiply by
    the weight. Any other norm (Gemma's multiplies by ``1 + weight``) raises ``NotImplementedError``."""
    norm = final_norm(lm)
    kind = type(norm._module).__name__
    if kind == "LayerNorm":
        return norm.weight, norm.bias, float(norm.eps), True
    if kind.endswith("RMSNorm") and hasattr(norm, "variance_epsilon"):  # Llama's, Qwen2's, Mistral's
        return norm.weight, None, float(norm.variance_epsilon), False
    raise NotImplementedError(
        f"{kind}: the final norm of this architecture is not one section 3's arithmetic knows (LayerNorm, or "
        "an RMSNorm that multiplies by its weight); Gemma's, for one, multiplies by 1 + weight"
    )
