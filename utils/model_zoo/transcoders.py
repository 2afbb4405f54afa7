"""The zoo's transcoders: one per MLP layer of a zoo model, each reading the MLP's input and
writing an estimate of its output through sparse latents (TopK), so that a layer's MLP can be
replaced by features one can name.

A transcoder is a plain set of weights here, :class:`Transcoder`, with :func:`encode` and
:func:`decode`; :func:`load_transcoders` reads a model's set from ``data/transcoders/<name>/``
(safetensors only, checked against its card). They are trained by ``eai-sparsify`` (its
``Trainer`` with ``transcode=True``), as :func:`train` says; the attribution-graph code in
:mod:`utils.metrics.attribution` reads only these weights.

Command line (then ``python -m utils.cards.transcoder_cards NAME`` measures and writes the card)::

    python -m utils.model_zoo.transcoders storyworld-4l-transcoders [--out DIR | --replace-zoo]

Shapes: ``d_model`` is the model's width, ``d_tc`` the transcoder's number of latents.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from utils import paths
from utils.model_zoo.models import ZooError, file_mode, sha256_file
from utils.model_zoo.registry import TranscoderSpec, transcoder_entry

TRANSCODERS_DIR = paths.DATA / "transcoders"


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


def topk_encode(x: torch.Tensor, W_enc: torch.Tensor, b_enc: torch.Tensor, k: int) -> torch.Tensor:
    """``ReLU(x W_enc + b_enc)`` ``[..., d_tc]`` for ``x [..., d_model]``, zero but for each row's ``k`` largest."""
    pre = torch.relu(x @ W_enc + b_enc)
    top = pre.topk(k, dim=-1)
    return torch.zeros_like(pre).scatter(-1, top.indices, top.values)


def encode(tc: Transcoder, x: torch.Tensor) -> torch.Tensor:
    """The latents' activations on MLP inputs ``x [..., d_model]``: ``[..., d_tc]``, zero but for each row's
    ``k`` largest positive pre-activations."""
    return topk_encode(x, tc.W_enc, tc.b_enc, tc.k)


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


def save(tcs: list[Transcoder], folder: Path, dtype: torch.dtype = torch.float16) -> list[Path]:
    """Write a model's transcoders to ``folder`` as ``layer<N>.safetensors`` (float16: half the bytes in git, and
    the card is measured on what was written) and return the files."""
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    files = []
    for tc in tcs:
        path = folder / f"layer{tc.layer}.safetensors"
        tensors = {"W_enc": tc.W_enc, "b_enc": tc.b_enc, "W_dec": tc.W_dec, "b_dec": tc.b_dec}
        save_file({k: v.to(dtype).contiguous() for k, v in tensors.items()}, path, metadata={"k": str(tc.k)})
        path.chmod(file_mode())  # safetensors writes 0600 whatever the umask
        files.append(path)
    return files


def train(spec: TranscoderSpec, out: Path) -> Path:
    """Train ``spec``'s transcoders with ``eai-sparsify`` on the model's own weights (loaded by transformers from
    its zoo folder, offline) and write them to ``out`` with ``training.json`` (the spec, the time, the files'
    checksums). sparsify's working folder (its checkpoints) is deleted afterwards."""
    from sparsify import SparseCoderConfig
    from sparsify.config import TrainConfig
    from sparsify.trainer import Trainer
    from transformers import AutoModelForCausalLM

    from utils.corpora.tokenizer import EOT, load_tokenizer
    from utils.model_zoo.saes import N_CTX, token_dataset

    torch.manual_seed(spec.seed)
    model = AutoModelForCausalLM.from_pretrained(paths.MODELS / spec.model, dtype=torch.float32)
    data = token_dataset(spec.data_seed, spec.tokens // N_CTX).with_format("torch")
    work = out / "sparsify"
    cfg = TrainConfig(
        SparseCoderConfig(num_latents=spec.d_tc, k=spec.k, transcode=True),
        batch_size=spec.rows_per_batch,
        hookpoints=["*.mlp"],  # h.N.mlp in GPT-2, layers.N.mlp in Llama
        init_seeds=[spec.seed],
        auxk_alpha=spec.auxk_alpha,
        dead_feature_threshold=spec.dead_tokens,
        exclude_tokens=[load_tokenizer().convert_tokens_to_ids(EOT)],
        save_dir=str(work),
        run_name="run",
        save_every=10**9,
        log_to_wandb=False,
    )
    start = time.time()
    trainer = Trainer(cfg, data, model)
    trainer.fit()
    seconds = time.time() - start
    tcs = [from_sparsify(work / "run" / point, layer) for layer, point in enumerate(cfg.hookpoints)]
    files = save(tcs, out)
    shutil.rmtree(work)
    training = {
        "spec": asdict(spec),
        "hookpoints": cfg.hookpoints,
        "seconds": round(seconds),
        "trainer": "eai-sparsify",
    }
    training["sha256"] = {f.name: sha256_file(f) for f in files}
    training["layers"] = len(tcs)
    (out / "training.json").write_text(json.dumps(training, indent=1))
    return out


def rebuild_command(name: str) -> str:
    """The commands that train transcoder set ``name`` into the zoo and write its card."""
    train, card = "python -m utils.model_zoo.transcoders", "python -m utils.cards.transcoder_cards"
    return f"{train} {name} --replace-zoo && {card} {name}"


def load_transcoders(name: str, folder: Path | None = None, *, verify: bool = True) -> list[Transcoder]:
    """The transcoders ``name`` (one per layer, in layer order) from ``data/transcoders/<name>/``; with ``verify``
    every file's sha256 is checked against the card, and a missing or changed file says how to rebuild."""
    from safetensors import safe_open

    folder = Path(folder or TRANSCODERS_DIR / name)
    rebuild = (
        f"python -m utils.model_zoo.transcoders {name} --replace-zoo && python -m utils.cards.transcoder_cards {name}"
    )
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


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        description="Train a zoo model's transcoders (one per MLP layer) with eai-sparsify."
    )
    parser.add_argument("name", help="a transcoder set of the zoo's registry")
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--out", type=Path, help="folder to write to (default runs/transcoders/NAME)")
    where.add_argument(
        "--replace-zoo", action="store_true", help="write into data/transcoders/NAME, which lessons load"
    )
    args = parser.parse_args(argv)
    try:
        spec = transcoder_entry(args.name)
    except KeyError as e:
        print(e.args[0], file=sys.stderr)
        return 2
    out = (
        TRANSCODERS_DIR / spec.name
        if args.replace_zoo
        else (args.out or paths.ROOT / "runs" / "transcoders" / spec.name)
    )
    print(f"training {spec.name} on {spec.model}: {spec.tokens:,} tokens, {spec.d_tc} latents, k = {spec.k}; to {out}")
    train(spec, out)
    print(
        f"wrote {out}; measure it and write its card with: python -m utils.cards.transcoder_cards {spec.name}"
        + ("" if args.replace_zoo else f" --folder {out}")
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
