"""The zoo's transcoders: one per MLP layer of a zoo model, each reading the MLP's input and
writing an estimate of its output through a few thousand sparse latents (TopK), so that a
layer's MLP can be replaced by features one can name.

A transcoder is a plain set of weights here, :class:`Transcoder`, with :func:`encode` and
:func:`decode`; :func:`load_transcoders` reads a model's set from ``data/transcoders/<name>/``
(safetensors only, checked against its card). They are trained by ``eai-sparsify`` (its
``Trainer`` with ``transcode=True``), as :func:`train` says; the attribution-graph code in
:mod:`utils.metrics.attribution` reads only these weights.

Shapes: ``d_model`` is the model's width, ``d_tc`` the transcoder's number of latents.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

from utils import paths
from utils.model_zoo.models import ZooError, sha256_file


@dataclass(frozen=True)
class Transcoder:
    """One MLP layer's transcoder: ``acts = TopK_k(ReLU(x @ W_enc + b_enc))``, ``out = acts @ W_dec + b_dec``,
    where ``x`` is the MLP's input (after the layer's second norm) and ``out`` estimates the MLP's output."""

    layer: int
    k: int
    W_enc: torch.Tensor  # [d_model, d_tc]
    b_enc: torch.Tensor  # [d_tc]
    W_dec: torch.Tensor  # [d_tc, d_model]
    b_dec: torch.Tensor  # [d_model]

    @property
    def d_tc(self) -> int:
        return self.W_enc.shape[1]


def encode(tc: Transcoder, x: torch.Tensor) -> torch.Tensor:
    """The latents' activations on MLP inputs ``x [..., d_model]``: ``[..., d_tc]``, zero but for each row's
    ``k`` largest positive pre-activations."""
    pre = torch.relu(x @ tc.W_enc + tc.b_enc)
    top = pre.topk(tc.k, dim=-1)
    return torch.zeros_like(pre).scatter(-1, top.indices, top.values)


def decode(tc: Transcoder, acts: torch.Tensor) -> torch.Tensor:
    """The transcoder's estimate of the MLP's output from activations ``acts [..., d_tc]``: ``[..., d_model]``."""
    return acts @ tc.W_dec + tc.b_dec


def from_sparsify(folder: Path, layer: int) -> Transcoder:
    """A transcoder saved by ``eai-sparsify`` (``cfg.json`` and ``sae.safetensors`` in ``folder``), as plain
    weights. sparsify keeps its encoder as a linear layer ``[d_tc, d_model]``; here it is ``W_enc [d_model, d_tc]``."""
    from safetensors.torch import load_file

    cfg = json.loads((folder / "cfg.json").read_text())
    if not cfg.get("transcode") or cfg.get("activation", "topk") != "topk" or cfg.get("skip_connection"):
        raise ZooError(f"{folder} is not a TopK transcoder without a skip connection: {cfg}")
    w = {k: v.float() for k, v in load_file(folder / "sae.safetensors").items()}
    W_enc = w["encoder.weight"].T.contiguous()
    return Transcoder(layer, int(cfg["k"]), W_enc, w["encoder.bias"], w["W_dec"], w["b_dec"])


def save(tcs: list[Transcoder], folder: Path) -> list[Path]:
    """Write a model's transcoders to ``folder`` as ``layer<N>.safetensors`` (float32) and return the files."""
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    files = []
    for tc in tcs:
        path = folder / f"layer{tc.layer}.safetensors"
        tensors = {"W_enc": tc.W_enc, "b_enc": tc.b_enc, "W_dec": tc.W_dec, "b_dec": tc.b_dec}
        save_file({k: v.contiguous() for k, v in tensors.items()}, path, metadata={"k": str(tc.k)})
        files.append(path)
    return files


def load_transcoders(name: str, folder: Path | None = None, *, verify: bool = True) -> list[Transcoder]:
    """The transcoders ``name`` (one per layer, in layer order) from ``data/transcoders/<name>/``; with ``verify``
    every file's sha256 is checked against the card, and a missing or changed file says how to rebuild."""
    from safetensors import safe_open

    folder = Path(folder or paths.DATA / "transcoders" / name)
    rebuild = f"python -m utils.model_zoo.transcoders {name} --replace-zoo"
    card_path = folder / "card.json"
    if not card_path.is_file():
        raise ZooError(f"transcoders {name!r} are not built: {paths.shown(card_path)} is missing. Rebuild: {rebuild}")
    card = json.loads(card_path.read_text())
    tcs = []
    for layer in range(card["layers"]):
        path = folder / f"layer{layer}.safetensors"
        if not path.is_file():
            raise ZooError(f"{paths.shown(path)} is missing. Restore it with git, or rebuild: {rebuild}")
        if verify and sha256_file(path) != card["sha256"][path.name]:
            raise ZooError(f"{paths.shown(path)} does not match its card: the file is corrupt. Rebuild: {rebuild}")
        with safe_open(path, framework="pt") as f:
            k = int(f.metadata()["k"])
            w = {key: f.get_tensor(key).float() for key in f.keys()}
        tcs.append(Transcoder(layer, k, w["W_enc"], w["b_enc"], w["W_dec"], w["b_dec"]))
    return tcs
