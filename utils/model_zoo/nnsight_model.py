"""The course's models through nnsight: ``load_nnsight(name)`` and the modules the appendix reads.

TransformerLens gives every architecture the same hook names (``blocks.1.hook_resid_post``).
nnsight gives you the Hugging Face model's own module tree, wrapped so that any module's input
and output can be read and written inside a ``with lm.trace(...)`` block: GPT-2's blocks are
``transformer.h``, Llama's ``model.layers``. The few functions here find the same parts in either.
The same code runs on NDIF's servers with ``remote=True``, for models no laptop holds.
"""

from __future__ import annotations

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
