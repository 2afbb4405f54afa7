"""Train a zoo model from scratch on its corpus: ``python -m utils.model_zoo.train storyworld-4l``.

Seeded and resumable: every ``checkpoint_every`` steps the model, the optimiser state, the
step, the position in the data stream and the precision go to
``runs/<name>/checkpoint.safetensors`` (no pickle) in one atomic step (written beside it,
then renamed over it), and running the same command again continues from there, to the
bit. Ctrl-C stops at once and prints the command that resumes. The loss curve is logged to
``runs/<name>/train_log.csv`` (a resumed run first drops the rows logged after its
checkpoint); ``--runs DIR`` keeps the checkpoints in ``DIR/<name>`` instead. Problems found
before training (the budget, the folders, the tokenizer) stop it with one sentence and exit
1 before anything is written; a disk that fills up on the way stops it with one sentence
too, the last checkpoint kept and nothing half-written.

At the end the model's folder is written (weights in float16, its config, ``training.json``,
the loss log and a card holding the weights' checksum, so that ``load_model(name,
folder=...)`` loads it at once): ``runs/<name>/model/`` by default, or the folder ``--out``
names (new, empty, or holding an earlier run of the same model). The zoo's own copy in
``data/models/<name>/``, which the lessons load, is replaced only with ``--replace-zoo-model``
(``make zoo`` passes it). Its card is measured afterwards, one layer up, by
``python -m utils.cards.model_cards <name> --write-card`` (``make zoo`` runs both).

Runs on the course's default device (CUDA, then Apple's MPS, then the CPU). Matrix products
run in bfloat16 (autocast; the weights and the optimiser stay in float32) wherever the
hardware does bfloat16 natively: CUDA, and CPUs with AVX-512 BF16 or AMX
(scripts/benchmark.py measures the speed-up). Elsewhere, and with ``--precision fp32``,
everything is float32. ``--tokens`` overrides the budget for
a quick trial.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import shlex
import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from utils import paths
from utils.corpora.tokenizer import TokenizerMissing, corpus_tokenizer, corpus_tokenizer_hash, load_tokenizer
from utils.model_zoo.models import (
    check_device,
    disk_full,
    file_mode,
    logits_of,
    output_problem,
    sha256_file,
    write_folder,
    write_problem,
)
from utils.model_zoo.packing import PackedStream, device_name
from utils.model_zoo.registry import SPECS, Spec

CHECKPOINT = "checkpoint.safetensors"
EXIT_INTERRUPTED = 130  # 128 + SIGINT: what a shell reports after Ctrl-C


class TrainError(RuntimeError):
    """Training cannot start or go on; the message says why and what to do, in one sentence."""


class Unwritten(TrainError):
    """A checkpoint or the model could not be written (a full disk...): ``what`` says which folder and
    what is kept, ``fix`` what to do before resuming (the message says both)."""

    def __init__(self, what: str, fix: str):
        super().__init__(f"{what}; {fix} and run the same training again to resume")
        self.what, self.fix = what, fix


def _unwritten(error: BaseException, folder: Path, what: str) -> Unwritten | None:
    """:class:`Unwritten` for an ``error`` raised while writing into ``folder`` (``what`` says what
    is lost and kept), or ``None`` when ``error`` is not about writing files."""
    problem = write_problem(error, folder)
    if problem is None:
        return None
    fix = "free some space on that disk" if disk_full(error) else "make it writable"
    return Unwritten(f"{problem}: {what}", fix)


class Interrupted(KeyboardInterrupt):
    """Ctrl-C during training: ``step`` reached, ``saved`` the step of the checkpoint kept."""

    def __init__(self, name: str, step: int, steps: int, saved: int, run: Path):
        super().__init__(f"{name} stopped at step {step}/{steps}")
        self.name, self.step, self.steps, self.saved, self.run = name, step, steps, saved, run


# ---------------------------------------------------------------------------------------
# Models


def build_model(spec: Spec, vocab: int):
    """A freshly initialised model (seeded) for ``spec``."""
    torch.manual_seed(spec.seed)
    if spec.arch == "attn-only":
        from transformer_lens.config import TransformerBridgeConfig
        from transformer_lens.model_bridge import TransformerBridge

        cfg = TransformerBridgeConfig(**native_config(spec, vocab))
        return TransformerBridge.boot_native(cfg, tokenizer=load_tokenizer())
    if spec.arch == "gpt2":
        from transformers import GPT2Config, GPT2LMHeadModel

        cfg = GPT2Config(
            vocab_size=vocab,
            n_positions=spec.n_ctx,
            bos_token_id=0,
            eos_token_id=0,
            resid_pdrop=0.0,
            embd_pdrop=0.0,
            attn_pdrop=0.0,
            tie_word_embeddings=False,
            **spec.config,
        )
        return GPT2LMHeadModel(cfg)
    if spec.arch == "llama":
        from transformers import LlamaConfig, LlamaForCausalLM

        cfg = LlamaConfig(
            vocab_size=vocab,
            max_position_embeddings=spec.n_ctx,
            bos_token_id=0,
            eos_token_id=0,
            pad_token_id=0,
            tie_word_embeddings=False,
            **spec.config,
        )
        return LlamaForCausalLM(cfg)
    raise ValueError(f"unknown architecture {spec.arch!r}")


def native_config(spec: Spec, vocab: int) -> dict:
    """JSON-able TransformerBridgeConfig arguments of an attention-only model."""
    return dict(
        spec.config,
        n_ctx=spec.n_ctx,
        d_vocab=vocab,
        attn_only=True,
        act_fn="gelu",
        seed=spec.seed,
        default_prepend_bos=True,
        model_name=spec.name,
    )


def lm_loss(model, rows: torch.Tensor, precision: str = "fp32") -> torch.Tensor:
    """Mean next-token cross-entropy over ``rows`` [batch, n_ctx + 1]; with ``precision``
    "bf16" the forward pass runs under bfloat16 autocast (the loss is taken in float32)."""
    with torch.autocast(rows.device.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
        logits = logits_of(model, rows[:, :-1])
    return torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), rows[:, 1:].reshape(-1))


# ---------------------------------------------------------------------------------------
# Checkpoints (safetensors + JSON)


def _save_state(run: Path, model, opt, meta: dict) -> None:
    """Commit weights, optimiser state and ``meta`` (step, cursor, precision...) at once.

    Everything goes into one safetensors file (``meta`` in its header), written under a
    temporary name, flushed to disk and renamed over the last checkpoint: a crash at any
    moment leaves either the old checkpoint or the new one, never a mixture.
    """
    tensors = {f"model.{k}": v.detach().contiguous().clone() for k, v in model.state_dict().items()}
    for i, st in opt.state_dict()["state"].items():
        for k, v in st.items():
            tensors[f"opt.{i}.{k}"] = (
                v.detach().reshape(-1).contiguous().clone() if k == "step" else v.detach().contiguous().clone()
            )
    tmp = run / f"{CHECKPOINT}.tmp"
    try:
        save_file(tensors, tmp, metadata={"meta": json.dumps(meta)})
        tmp.chmod(file_mode())  # safetensors writes 0600 whatever the umask
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        _commit(tmp, run / CHECKPOINT)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    for old in ("state.json", "state.safetensors"):  # the two-file layout of earlier runs
        (run / old).unlink(missing_ok=True)


def _commit(tmp: Path, final: Path) -> None:
    """Rename ``tmp`` over ``final`` (atomic) and make the rename itself durable."""
    os.replace(tmp, final)
    if os.name == "posix":  # a folder cannot be opened for fsync on Windows
        fd = os.open(final.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _has_state(run: Path) -> bool:
    return (run / CHECKPOINT).exists() or (run / "state.json").exists()


def _read_state(run: Path) -> tuple[dict, dict]:
    """(meta, tensors) of the checkpoint in ``run`` (or of the older two-file layout)."""
    from safetensors import safe_open

    path = run / CHECKPOINT
    try:
        if path.exists():
            with safe_open(str(path), "pt") as f:
                meta = json.loads(f.metadata()["meta"])
            return meta, load_file(path)
        return json.loads((run / "state.json").read_text()), load_file(run / "state.safetensors")
    except Exception as e:
        raise TrainError(
            f"the checkpoint in {paths.shown(run)} cannot be read ({type(e).__name__}: {e}); pass --fresh to start over"
        ) from None


def _load_state(run: Path, model, opt) -> dict:
    meta, tensors = _read_state(run)
    model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
    sd = opt.state_dict()
    for key, v in tensors.items():
        if key.startswith("opt."):
            _, i, k = key.split(".", 2)
            sd["state"].setdefault(int(i), {})[k] = v.reshape(()) if k == "step" else v
    opt.load_state_dict(sd)
    return meta


def _open_log(path: Path, step: int):
    """The loss log, ready to append after ``step``: rows logged after it are dropped."""
    header = ["step", "tokens", "loss", "lr", "seconds"]
    rows = []
    if step > 0 and path.exists():
        with open(path, newline="") as f:
            rows = [r for r in list(csv.reader(f))[1:] if r and r[0].isdigit() and int(r[0]) <= step]
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", newline="") as f:
        csv.writer(f).writerows([header, *rows])
    os.replace(tmp, path)
    return open(path, "a", newline="")


def _folder_problem(folder: Path) -> str | None:
    """Why ``folder`` cannot be created or written to (``None`` when it can)."""
    here = Path(folder).absolute()
    for p in (here, *here.parents):
        if p.exists():
            if not p.is_dir():
                return f"{paths.shown(p)} is a file, not a folder"
            if not os.access(p, os.W_OK | os.X_OK):
                return f"{paths.shown(p)} is not writable"
            try:  # os.access says yes to root everywhere: try it (a file system such as /proc refuses even root)
                tempfile.TemporaryFile(dir=p).close()
            except OSError as e:
                return f"{paths.shown(p)} is not writable ({e.strerror or e})"
            return None
    return None


RUN_FILES = (CHECKPOINT, f"{CHECKPOINT}.tmp", "state.json", "state.safetensors", "train_log.csv")  # --fresh drops them


def _run_folder_error(run: Path, problem: str) -> TrainError:
    return TrainError(
        f"cannot keep checkpoints in {paths.shown(run)}: {problem}; "
        "move it away or pass --runs a folder you can write to"
    )


def _prepare_run(run: Path, fresh: bool) -> None:
    """Make the run's folder; with ``fresh``, drop its checkpoint and log (a model written there stays)."""
    problem = _folder_problem(run)
    if problem is None:
        try:
            if fresh:
                for name in RUN_FILES:
                    (run / name).unlink(missing_ok=True)
            run.mkdir(parents=True, exist_ok=True)
            return
        except OSError as e:
            problem = e.strerror or str(e)
    raise _run_folder_error(run, problem)


# ---------------------------------------------------------------------------------------
# Training


def pick_precision(device: str, precision: str = "auto") -> str:
    """ "bf16" or "fp32": ``auto`` takes bf16 where the device computes it natively."""
    if precision != "auto":
        if precision not in ("bf16", "fp32"):
            raise ValueError(f"precision must be auto, bf16 or fp32, not {precision!r}")
        return precision
    if device.startswith("cuda"):
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    if device == "cpu":
        return "bf16" if torch.ops.mkldnn._is_mkldnn_bf16_supported() else "fp32"
    return "fp32"


def lr_at(step: int, total: int, spec: Spec) -> float:
    warm = max(1, int(spec.warmup * total))
    if step < warm:
        return spec.lr * (step + 1) / warm
    progress = (step - warm) / max(1, total - warm)
    return spec.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))


def train(
    name: str | Spec,
    tokens: int | None = None,
    fresh: bool = False,
    device: str | None = None,
    out_dir: Path | None = None,
    run_dir: Path | None = None,
    max_steps: int | None = None,
    precision: str = "auto",
    replace_zoo_model: bool = False,
) -> Path | None:
    """Train a zoo model (resuming when a checkpoint exists) and write its model directory.

    ``name`` is a zoo name or a ``Spec``. ``run_dir`` holds the checkpoints (default
    ``runs/<name>``); ``out_dir`` receives the model (default ``<run_dir>/model``; a folder that
    holds other files is refused), and ``replace_zoo_model`` writes it over the zoo's own copy
    in ``data/models/<name>`` instead. ``max_steps`` stops early after that many steps in this
    call, leaving a checkpoint to resume from (returns None then). ``precision`` is "auto",
    "bf16" or "fp32" (see :func:`pick_precision`). A problem found before training starts
    raises ``TrainError`` without writing anything; a checkpoint or model that cannot be
    written raises :class:`Unwritten`, the last checkpoint kept; Ctrl-C raises
    :class:`Interrupted`.
    """
    spec = name if isinstance(name, Spec) else SPECS[name]
    name = spec.name
    if tokens is not None and tokens <= 0:
        raise TrainError(f"the token budget must be positive, not {tokens}; leave it out for the full budget")
    budget = spec.tokens if tokens is None else tokens
    steps = math.ceil(budget / (spec.batch * spec.n_ctx))
    device = check_device(device)
    precision = pick_precision(device, precision)
    run = Path(run_dir) if run_dir is not None else paths.RUNS / name
    problem = _folder_problem(run)
    if problem:
        raise _run_folder_error(run, problem)
    zoos_own = paths.MODELS / name
    if replace_zoo_model and out_dir is not None and Path(out_dir).resolve() != zoos_own.resolve():
        raise TrainError(
            f"--replace-zoo-model writes the zoo's own {paths.shown(zoos_own)}, not {paths.shown(out_dir)}: "
            "leave out one of the two"
        )
    default = run / "model"
    out = zoos_own if replace_zoo_model else Path(out_dir) if out_dir is not None else default
    problem = _folder_problem(out)
    if problem:
        raise TrainError(
            f"cannot write the model to {paths.shown(out)}: {problem}; pass --out a folder you can write to"
        )
    problem = output_problem(out, name, zoos_own, replace_zoo_model, "--replace-zoo-model", default)
    if problem:
        raise TrainError(problem)
    tok = corpus_tokenizer(spec.corpus)  # before anything is written: a missing tokenizer stops here
    vocab = len(tok)
    # All cores unless OMP_NUM_THREADS says otherwise (two small runs side by side on a
    # 2-core machine train faster with one thread each than one after the other).
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS") or os.cpu_count() or 1))
    _prepare_run(run, fresh)
    (run / f"{CHECKPOINT}.tmp").unlink(missing_ok=True)  # left by a run killed mid-write

    model = build_model(spec, vocab).to(device)
    decay = [
        p
        for n, p in model.named_parameters()
        if p.dim() >= 2 and "embed" not in n and "wte" not in n and "wpe" not in n
    ]
    rest = [p for n, p in model.named_parameters() if not any(p is q for q in decay)]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": spec.weight_decay}, {"params": rest, "weight_decay": 0.0}],
        lr=spec.lr,
        betas=(0.9, 0.95),
    )
    step, cursor, elapsed = 0, 0, 0.0
    if _has_state(run):
        meta = _load_state(run, model, opt)
        if meta["steps"] != steps:
            raise TrainError(
                f"{paths.shown(run)} holds a run of {meta['steps']} steps, not {steps}; "
                "give the --tokens it was started with, or pass --fresh to start over"
            )
        step, cursor, elapsed = meta["step"], meta["cursor"], meta["elapsed"]
        if meta.get("precision", precision) != precision:
            print(f"note: {run} was started in {meta['precision']}; it continues in {precision}", file=sys.stderr)
        print(f"resuming {name} at step {step}/{steps}", file=sys.stderr)
    data = PackedStream(spec.data_seed, spec.n_ctx, tok, cursor, spec.corpus)

    log_path = run / "train_log.csv"
    saved = step
    model.train()
    t0 = time.time() - elapsed
    smooth = None
    stop_at = steps if max_steps is None else min(steps, step + max_steps)
    try:
        with (
            _open_log(log_path, step) as log,
            tqdm(total=steps, initial=step, desc=f"training {name}", unit="step") as bar,
        ):
            writer = csv.writer(log)
            while step < stop_at:
                rows = data.batch(spec.batch).to(device)
                for g in opt.param_groups:
                    g["lr"] = lr_at(step, steps, spec)
                loss = lm_loss(model, rows, precision)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                opt.step()
                step += 1
                smooth = loss.item() if smooth is None else 0.95 * smooth + 0.05 * loss.item()
                bar.update(1)
                bar.set_postfix(loss=f"{smooth:.3f}")
                if step % 10 == 0 or step == steps:
                    writer.writerow(
                        [
                            step,
                            step * spec.batch * spec.n_ctx,
                            round(loss.item(), 5),
                            f"{opt.param_groups[0]['lr']:.3g}",
                            round(time.time() - t0, 1),
                        ]
                    )
                    log.flush()
                if step % spec.checkpoint_every == 0 or step == stop_at:
                    elapsed = time.time() - t0
                    meta = {
                        "step": step,
                        "steps": steps,
                        "cursor": data.state(),
                        "elapsed": elapsed,
                        "name": name,
                        "precision": precision,
                    }
                    _save_state(run, model, opt, meta)
                    saved = step
    except KeyboardInterrupt:
        raise Interrupted(name, step, steps, saved, run) from None
    except Exception as e:
        kept = f"the checkpoint of step {saved} is kept" if saved else "no checkpoint was kept yet"
        unwritten = _unwritten(e, run, f"the checkpoint of step {step} could not be written, and {kept}")
        if unwritten is None:
            raise
        raise unwritten from None
    if step < steps:
        return None
    training = {
        "tokens": steps * spec.batch * spec.n_ctx,
        "steps": steps,
        "batch": spec.batch,
        "n_ctx": spec.n_ctx,
        "lr": spec.lr,
        "seconds": round(elapsed, 1),
        "device": device_name(device),
        "precision": precision,
        "seed": spec.seed,
        "data_seed": spec.data_seed,
        "torch": torch.__version__,
    }
    try:
        return write_model_dir(spec, model, out, training, log_path)
    except Exception as e:
        kept = f"{paths.shown(run)} keeps the checkpoint of step {steps} (the end of training)"
        unwritten = _unwritten(e, out, f"the model was not written, and {kept}")
        if unwritten is None:
            raise
        raise unwritten from None


def write_model_dir(spec: Spec, model, out: Path, training: dict, log: Path | None = None) -> Path:
    """Save weights (float16 safetensors), config, ``training.json``, the loss ``log`` and a first
    card (the checksums ``load_model`` checks; ``utils.cards.model_cards`` measures the rest) into
    ``out``. The files are written elsewhere first and moved in whole: a failure (a full disk)
    leaves ``out`` as it was."""
    model = model.to("cpu").eval()

    def write(folder: Path) -> None:
        if spec.arch == "attn-only":
            sd = {k: v.detach().to(torch.float16).contiguous() for k, v in model.state_dict().items()}
            save_file(sd, folder / "model.safetensors", metadata={"format": "pt"})
            cfg = native_config(spec, model.cfg.d_vocab)
            (folder / "config.json").write_text(json.dumps(cfg, indent=1))
        else:
            try:
                model.to(torch.float16).save_pretrained(folder, safe_serialization=True)
            finally:
                model.to(torch.float32)
        meta = {
            "name": spec.name,
            "arch": spec.arch,
            "format": spec.format,
            "training": training,
            "tokenizer_sha256": corpus_tokenizer_hash(spec.corpus),
            "n_params": sum(p.numel() for p in model.parameters()),
        }
        (folder / "training.json").write_text(json.dumps(meta, indent=1))
        if log is not None:
            shutil.copyfile(log, folder / "train_log.csv")
        card = {  # what load_model checks; python -m utils.cards.model_cards measures the rest
            "name": spec.name,
            "format": spec.format,
            "arch": spec.arch,
            "weights_sha256": sha256_file(folder / "model.safetensors"),
            "tokenizer_sha256": meta["tokenizer_sha256"],
            "training": training,
        }
        (folder / "card.json").write_text(json.dumps(card, indent=1))

    return write_folder(out, write)


def _positive_tokens(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value <= 0:
        raise argparse.ArgumentTypeError(
            f"must be a positive number of tokens, got {text}; leave --tokens out for the full budget"
        )
    return value


def _device(text: str) -> str:
    try:
        return check_device(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m utils.model_zoo.train", description=__doc__.split("\n\n")[0])
    ap.add_argument("name", choices=sorted(SPECS) + ["all"], help="zoo model to train")
    ap.add_argument("--tokens", type=_positive_tokens, help="override the training budget (quick trials)")
    ap.add_argument("--fresh", action="store_true", help="ignore an existing checkpoint")
    ap.add_argument("--device", type=_device, help="cuda, mps or cpu (default: the first of these present)")
    ap.add_argument(
        "--out",
        type=Path,
        help="model directory: new, empty, or an earlier run of the same model (default RUNS/<name>/model)",
    )
    ap.add_argument("--runs", type=Path, help="checkpoint folder; each model uses RUNS/<name> (default runs/)")
    ap.add_argument(
        "--replace-zoo-model",
        action="store_true",
        help="write the model over the zoo's own copy in data/models/<name>, which the lessons load (make zoo)",
    )
    ap.add_argument(
        "--precision",
        choices=["auto", "bf16", "fp32"],
        default="auto",
        help="bf16 autocast or plain fp32 (default: bf16 where the device has it)",
    )
    return ap


def resume_command(args: argparse.Namespace) -> str:
    """The command line that continues the run ``args`` started (never with --fresh)."""
    words = ["python", "-m", "utils.model_zoo.train", args.name]
    for flag, value in (("--tokens", args.tokens), ("--device", args.device), ("--out", args.out)):
        if value is not None:
            words += [flag, str(value)]
    if args.runs is not None:
        words += ["--runs", str(args.runs)]
    if args.precision != "auto":
        words += ["--precision", args.precision]
    if getattr(args, "replace_zoo_model", False):
        words += ["--replace-zoo-model"]
    return shlex.join(words)


def written(name: str, out: Path, replaced_zoo: bool) -> str:
    """The last line of a run: where the model went, how to load it and how to measure its card."""
    if replaced_zoo:
        return f"wrote {paths.shown(out)}; measure its card with: python -m utils.cards.model_cards {name} --write-card"
    where = str(Path(out).absolute())
    measure = f"from utils.cards.model_cards import write_card; write_card({name!r}, {where!r})"
    return (
        f"wrote {paths.shown(out)} (the zoo's own {name} is unchanged); load it with "
        f'load_model({name!r}, folder={where!r}), and measure its card with: python -c "{measure}"'
    )


def main(argv=None) -> int:
    ap = _parser()
    args = ap.parse_args(argv)
    if args.name == "all" and args.out is not None:
        ap.error("--out names one model's folder: with all, each model goes to RUNS/<name>/model")
    names = sorted(SPECS) if args.name == "all" else [args.name]
    try:
        for name in names:
            out = train(
                name,
                args.tokens,
                args.fresh,
                args.device,
                args.out,
                run_dir=None if args.runs is None else args.runs / name,
                precision=args.precision,
                replace_zoo_model=args.replace_zoo_model,
            )
            print(written(name, out, args.replace_zoo_model), file=sys.stderr)
    except Interrupted as e:
        if e.saved:
            kept = f"{paths.shown(e.run)} keeps the checkpoint of step {e.saved}; resume with"
        else:
            kept = "no checkpoint was written yet; start again with"
        print(f"interrupted {e.name} at step {e.step}/{e.steps}; {kept}: {resume_command(args)}", file=sys.stderr)
        return EXIT_INTERRUPTED
    except KeyboardInterrupt:
        print(f"interrupted; resume with: {resume_command(args)}", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Unwritten as e:
        print(
            f"python -m utils.model_zoo.train: error: {e.what}; {e.fix} and resume with: {resume_command(args)}",
            file=sys.stderr,
        )
        return 1
    except (TrainError, TokenizerMissing) as e:
        print(f"python -m utils.model_zoo.train: error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
