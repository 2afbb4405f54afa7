"""Training: seeded, resumable to the bit, writes a loadable model directory."""

import csv
import errno
import json
import os
import random
import shlex
import signal
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

import pytest
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file

from utils import paths
from utils.corpora.tokenizer import load_tokenizer
from utils.model_zoo import train as tr
from utils.model_zoo.models import load_model
from utils.model_zoo.registry import SPECS, Spec
from utils.paths import ROOT

TINY = {
    "gpt2": dict(n_layer=1, n_embd=32, n_head=2, n_inner=64),
    "llama": dict(
        num_hidden_layers=1, hidden_size=32, num_attention_heads=2, num_key_value_heads=2, intermediate_size=64
    ),
    "attn-only": dict(n_layers=1, d_model=32, n_heads=2, d_head=16, normalization_type="LN"),
}


def tiny(arch: str) -> tr.Spec:
    return Spec(
        f"tiny-{arch}", arch, TINY[arch], seed=1, data_seed=2, tokens=6 * 4 * 32, batch=4, n_ctx=32, checkpoint_every=2
    )


def weights(run_dir):
    """Every tensor of the checkpoint in ``run_dir``: the model's and the optimiser's."""
    return dict(load_file(run_dir / tr.CHECKPOINT))


def checkpoint_meta(run_dir) -> dict:
    with safe_open(str(run_dir / tr.CHECKPOINT), "pt") as f:
        return json.loads(f.metadata()["meta"])


@pytest.mark.parametrize("arch", ["gpt2", "attn-only"])
def test_resuming_gives_the_same_weights_as_one_straight_run(tmp_path, arch):
    spec = tiny(arch)
    straight = tmp_path / "straight"
    tr.train(spec, run_dir=straight, out_dir=tmp_path / "m1", device="cpu")
    halves = tmp_path / "halves"
    assert tr.train(spec, run_dir=halves, device="cpu", max_steps=3) is None
    assert checkpoint_meta(halves)["step"] == 3
    tr.train(spec, run_dir=halves, out_dir=tmp_path / "m2", device="cpu")
    a, b = weights(straight), weights(halves)
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_training_logs_a_loss_curve_that_goes_down(tmp_path):
    spec = Spec("tiny", "gpt2", TINY["gpt2"], seed=1, data_seed=2, tokens=40 * 8 * 32, batch=8, n_ctx=32, lr=3e-3)
    out = tr.train(spec, run_dir=tmp_path / "run", out_dir=tmp_path / "model", device="cpu")
    rows = list(csv.DictReader(open(out / "train_log.csv")))
    assert [int(r["step"]) for r in rows] == list(range(10, 41, 10))
    assert float(rows[-1]["loss"]) < float(rows[0]["loss"]) - 0.5
    meta = json.loads((out / "training.json").read_text())
    assert meta["training"]["tokens"] == 40 * 8 * 32 and meta["training"]["seed"] == 1


@pytest.mark.parametrize("arch", ["gpt2", "llama", "attn-only"])
def test_every_architecture_trains_and_saves_float16_safetensors(tmp_path, arch):
    out = tr.train(tiny(arch), run_dir=tmp_path / "run", out_dir=tmp_path / "model", device="cpu")
    w = load_file(out / "model.safetensors")
    assert all(v.dtype == torch.float16 for v in w.values())
    assert (out / "config.json").exists()


def test_bf16_autocast_changes_the_arithmetic_and_is_recorded(tmp_path):
    spec = tiny("gpt2")
    runs = {}
    for precision in ("fp32", "bf16"):
        out = tr.train(
            spec,
            run_dir=tmp_path / precision,
            out_dir=tmp_path / f"m-{precision}",
            device="cpu",
            precision=precision,
        )
        assert json.loads((out / "training.json").read_text())["training"]["precision"] == precision
        runs[precision] = weights(tmp_path / precision)
    assert any(not torch.equal(runs["fp32"][k], runs["bf16"][k]) for k in runs["fp32"])


def test_precision_auto_resolves_and_nonsense_is_refused():
    assert tr.pick_precision("cpu") in ("bf16", "fp32")
    assert tr.pick_precision("mps") == "fp32"
    assert tr.pick_precision("cpu", "fp32") == "fp32"
    with pytest.raises(ValueError, match="auto, bf16 or fp32"):
        tr.pick_precision("cpu", "fp16")


def test_packed_rows_start_at_a_document_and_resume_from_the_cursor():
    tok = load_tokenizer()
    s = tr.PackedStream(seed=5, n_ctx=64, tokenizer=tok)
    first = s.batch(3)
    assert first.shape == (3, 65) and (first[:, 0] == 0).all()
    t = tr.PackedStream(seed=5, n_ctx=64, tokenizer=tok, cursor=s.state())
    assert torch.equal(s.batch(2), t.batch(2))


# ---------------------------------------------------------------------------------------
# Killed at any moment, a run resumes to the same weights as an uninterrupted one.

KILLED = Spec(
    "tiny-killed", "gpt2", TINY["gpt2"], seed=1, data_seed=2, tokens=12 * 4 * 32, batch=4, n_ctx=32, checkpoint_every=3
)

# Runs ``train`` on the spec in argv[1] in ``run`` (argv[2]) and SIGKILLs itself at a moment
# given by a kind and a count (argv[3], argv[4]): while computing optimiser step N, with the
# N-th checkpoint file half written, or just before or just after the N-th checkpoint rename.
KILL_DRIVER = r"""
import json, os, signal, sys
from pathlib import Path
import torch
from safetensors.torch import save_file as real_save_file
from utils.model_zoo import train as tr
from utils.paths import ROOT
from utils.model_zoo.registry import Spec

spec, run, kind, at = Spec(**json.loads(sys.argv[1])), Path(sys.argv[2]), sys.argv[3], int(sys.argv[4])
count = 0

def die():
    os.kill(os.getpid(), signal.SIGKILL)

if kind == "step":
    real_step = torch.optim.AdamW.step
    def step(self, *args, **kwargs):
        global count
        count += 1
        if count == at:
            die()
        return real_step(self, *args, **kwargs)
    torch.optim.AdamW.step = step
elif kind == "mid-write":
    def save_file(tensors, path, metadata=None):
        global count
        count += 1
        real_save_file(tensors, path, metadata=metadata)
        if count == at:
            os.truncate(path, os.path.getsize(path) // 2)
            die()
    tr.save_file = save_file
else:
    real_replace = os.replace
    def replace(src, dst):
        global count
        if not str(dst).endswith(".safetensors"):
            return real_replace(src, dst)
        count += 1
        if count == at and kind == "before-rename":
            die()
        real_replace(src, dst)
        if count == at:
            die()
    os.replace = replace
tr.train(spec, run_dir=run, out_dir=run.parent / "never", device="cpu", precision="fp32")
"""

# Step 11 falls after the loss log's row for step 10 and before the checkpoint of step 12;
# the checkpoint moments are drawn with a fixed seed from the run's four checkpoints.
_seeded = random.Random(20240611)
KILL_MOMENTS = [("step", 11)]
KILL_MOMENTS += [(kind, _seeded.randint(1, 4)) for kind in ("mid-write", "before-rename", "after-rename")]
# One thread each: bit-identical across processes, and fast on a busy two-core machine.
ONE_THREAD = {**os.environ, "OMP_NUM_THREADS": "1"}


@pytest.fixture(scope="module")
def straight_run(tmp_path_factory):
    base = tmp_path_factory.mktemp("straight")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("OMP_NUM_THREADS", "1")
        out = tr.train(KILLED, run_dir=base / "run", out_dir=base / "model", device="cpu", precision="fp32")
    return base / "run", out


def log_rows(path) -> list[tuple[str, str]]:
    """(step, loss) of every row of a loss log: the columns that do not depend on the clock."""
    return [(r["step"], r["loss"]) for r in csv.DictReader(open(path))]


def assert_same_run(run, out, straight_run):
    straight, straight_out = straight_run
    a, b = weights(straight), weights(run)
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a), [k for k in a if not torch.equal(a[k], b[k])]
    assert load_file(out / "model.safetensors").keys() == load_file(straight_out / "model.safetensors").keys()
    assert all(
        torch.equal(v, load_file(straight_out / "model.safetensors")[k])
        for k, v in load_file(out / "model.safetensors").items()
    )
    assert (
        log_rows(out / "train_log.csv")
        == log_rows(straight_out / "train_log.csv")
        == [
            ("10", log_rows(straight_out / "train_log.csv")[0][1]),
            ("12", log_rows(straight_out / "train_log.csv")[1][1]),
        ]
    )


@pytest.mark.parametrize("kind, at", KILL_MOMENTS, ids=[f"{k}-{n}" for k, n in KILL_MOMENTS])
def test_a_run_killed_at_any_moment_resumes_to_the_uninterrupted_weights(tmp_path, monkeypatch, straight_run, kind, at):
    run = tmp_path / "run"
    killed = subprocess.run(
        [sys.executable, "-c", KILL_DRIVER, json.dumps(asdict(KILLED)), str(run), kind, str(at)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env=ONE_THREAD,
    )
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    out = tr.train(KILLED, run_dir=run, out_dir=tmp_path / "model", device="cpu", precision="fp32")
    assert_same_run(run, out, straight_run)
    assert sorted(p.name for p in run.iterdir()) == [tr.CHECKPOINT, "train_log.csv"]


# Runs ``python -m utils.model_zoo.train`` with the spec in argv[1] added to the zoo; Ctrl-C arrives
# just before optimiser step argv[2] (0: never). The remaining arguments go to the command.
MAIN_DRIVER = r"""
import json, signal, sys
import torch
from utils.model_zoo import train as tr
from utils.model_zoo.registry import SPECS, Spec

spec, at = Spec(**json.loads(sys.argv[1])), int(sys.argv[2])
SPECS[spec.name] = spec
count = 0
real_step = torch.optim.AdamW.step
def step(self, *args, **kwargs):
    global count
    count += 1
    if count == at:
        signal.raise_signal(signal.SIGINT)
    return real_step(self, *args, **kwargs)
torch.optim.AdamW.step = step
sys.exit(tr.main(sys.argv[3:]))
"""


def run_main(spec, interrupt_at: int, args: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", MAIN_DRIVER, json.dumps(asdict(spec)), str(interrupt_at), *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env=ONE_THREAD,
        # Ctrl-C as in a terminal, even when the suite itself runs as a background job (which ignores SIGINT)
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )


def test_ctrl_c_prints_the_command_that_resumes_and_that_command_finishes_the_same_run(tmp_path, straight_run):
    args = [KILLED.name, "--device", "cpu", "--precision", "fp32"]
    args += ["--out", str(tmp_path / "model"), "--runs", str(tmp_path / "runs")]
    stopped = run_main(KILLED, 8, args)
    assert stopped.returncode == 130 and "Traceback" not in stopped.stderr
    last = stopped.stderr.strip().splitlines()[-1]
    assert last.startswith(f"interrupted {KILLED.name} at step 7/12; ") and "checkpoint of step 6" in last
    command = shlex.split(last.split("resume with: ")[1])
    assert command[:4] == ["python", "-m", "utils.model_zoo.train", KILLED.name]
    resumed = run_main(KILLED, 0, command[3:])
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "resuming tiny-killed at step 6/12" in resumed.stderr
    assert_same_run(tmp_path / "runs" / KILLED.name, tmp_path / "model", straight_run)


def test_the_resume_command_keeps_every_option_but_fresh():
    args = tr._parser().parse_args(["storyworld-4l", "--tokens", "5000", "--fresh", "--out", "my model"])
    assert tr.resume_command(args) == "python -m utils.model_zoo.train storyworld-4l --tokens 5000 --out 'my model'"


def test_a_checkpoint_of_the_earlier_two_file_layout_still_resumes(tmp_path, monkeypatch, straight_run):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    run = tmp_path / "run"
    assert tr.train(KILLED, run_dir=run, device="cpu", precision="fp32", max_steps=6) is None
    meta = checkpoint_meta(run)
    (run / tr.CHECKPOINT).rename(run / "state.safetensors")
    (run / "state.json").write_text(json.dumps(meta))
    out = tr.train(KILLED, run_dir=run, out_dir=tmp_path / "model", device="cpu", precision="fp32")
    assert_same_run(run, out, straight_run)
    assert not (run / "state.json").exists()


# ---------------------------------------------------------------------------------------
# Where a run writes its model: under runs/ unless told, never over the zoo's copy by default.

ATTN = "storyworld-attn2l"
ONE_STEP = str(SPECS[ATTN].batch * SPECS[ATTN].n_ctx)  # a budget of one step


def last_line(err: str) -> str:
    return err.replace("\r", "\n").strip().splitlines()[-1]


@pytest.fixture
def course_folders(tmp_path, monkeypatch, copy_zoo_model):
    """runs/ and data/models/ of the test's own, the latter holding a copy of the zoo's storyworld-attn2l
    (returned)."""
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    zoo_copy = copy_zoo_model(ATTN)
    monkeypatch.setattr(paths, "RUNS", tmp_path / "runs")
    return zoo_copy


def contents(folder) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in folder.iterdir()}


def test_a_trial_without_out_trains_under_runs_and_leaves_the_zoo_model_alone(course_folders, capsys):
    before = contents(course_folders)
    assert tr.main([ATTN, "--tokens", ONE_STEP, "--device", "cpu"]) == 0
    assert contents(course_folders) == before
    out = paths.RUNS / ATTN / "model"
    last = last_line(capsys.readouterr().err)
    assert last.startswith(f"wrote {out} (the zoo's own {ATTN} is unchanged); load it with ")
    assert f"load_model('{ATTN}', folder='{out}')" in last and f"write_card('{ATTN}', '{out}')" in last
    model = load_model(ATTN, device="cpu", folder=out)  # checked against the card training wrote
    assert model.cfg.n_layers == 2


def test_replacing_the_zoo_model_takes_an_explicit_flag(course_folders, capsys):
    weights = course_folders / "model.safetensors"
    before = weights.read_bytes()
    assert tr.main([ATTN, "--tokens", ONE_STEP, "--device", "cpu", "--out", str(course_folders)]) == 1
    last = last_line(capsys.readouterr().err)
    assert "is the zoo's own storyworld-attn2l" in last and "--replace-zoo-model" in last, last
    assert weights.read_bytes() == before and not paths.RUNS.exists(), "refused before anything was written"
    assert tr.main([ATTN, "--tokens", ONE_STEP, "--device", "cpu", "--replace-zoo-model"]) == 0
    last = last_line(capsys.readouterr().err)
    assert last.endswith(f"measure its card with: python -m utils.cards.model_cards {ATTN} --write-card"), last
    assert weights.read_bytes() != before
    load_model(ATTN, device="cpu")  # the new weights, with the card training wrote


def test_the_replace_flag_and_another_out_are_refused_together(course_folders, tmp_path):
    with pytest.raises(tr.TrainError, match="--replace-zoo-model writes"):
        tr.train(ATTN, tokens=int(ONE_STEP), device="cpu", out_dir=tmp_path / "elsewhere", replace_zoo_model=True)


@pytest.mark.parametrize("held", ["notes", "another model"])
def test_out_naming_a_folder_of_other_files_is_refused_before_training(tmp_path, held):
    out = tmp_path / "mine"
    out.mkdir()
    if held == "notes":
        (out / "notes.txt").write_text("my notes")
    else:
        (out / "training.json").write_text(json.dumps({"name": "storyworld-4l"}))
        (out / "model.safetensors").write_bytes(b"another model's weights")
    before = contents(out)
    with pytest.raises(tr.TrainError) as e:
        tr.train(tiny("gpt2"), run_dir=tmp_path / "run", out_dir=out, device="cpu")
    message = str(e.value)
    assert "already holds files this training did not write" in message and "\n" not in message
    assert ("notes.txt" if held == "notes" else "model.safetensors") in message
    assert contents(out) == before and not (tmp_path / "run").exists()


def test_out_holding_an_earlier_run_of_the_same_model_is_written_again_and_other_files_kept(tmp_path):
    spec, out = tiny("gpt2"), tmp_path / "model"
    tr.train(spec, run_dir=tmp_path / "run", out_dir=out, device="cpu")
    (out / "my notes.txt").write_text("kept")
    tr.train(spec, run_dir=tmp_path / "run", out_dir=out, device="cpu", fresh=True)
    assert (out / "my notes.txt").read_text() == "kept" and (out / "model.safetensors").exists()


def test_written_files_are_as_readable_as_the_umask_allows(tmp_path):
    old = os.umask(0o022)
    try:
        out = tr.train(tiny("attn-only"), run_dir=tmp_path / "run", out_dir=tmp_path / "model", device="cpu")
    finally:
        os.umask(old)
    modes = {p.name: oct(p.stat().st_mode & 0o777) for p in [*out.iterdir(), *(tmp_path / "run").iterdir()]}
    assert set(modes.values()) == {"0o644"}, modes


# ---------------------------------------------------------------------------------------
# A full disk: one sentence, no half-written file, the checkpoint kept and the command that resumes.

NO_SPACE = {
    "safetensors": lambda: SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)"),
    "oserror": lambda: OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)),
}


@pytest.mark.parametrize("error", NO_SPACE)
def test_a_full_disk_at_a_checkpoint_ends_in_one_sentence_and_keeps_the_last_checkpoint(
    tmp_path, monkeypatch, capsys, error
):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setitem(SPECS, KILLED.name, KILLED)
    real, calls = tr.save_file, []

    def full(tensors, path, metadata=None):
        calls.append(path)
        if len(calls) == 2:  # the second checkpoint (step 6) does not fit
            Path(path).write_bytes(b"half a checkpoint")
            raise NO_SPACE[error]()
        return real(tensors, path, metadata=metadata)

    monkeypatch.setattr(tr, "save_file", full)
    runs, out = tmp_path / "runs", tmp_path / "model"
    args = [KILLED.name, "--device", "cpu", "--precision", "fp32", "--runs", str(runs), "--out", str(out)]
    assert tr.main(args) == 1
    last = last_line(capsys.readouterr().err)
    run = runs / KILLED.name
    assert last.startswith(f"python -m utils.model_zoo.train: error: the disk holding {run} is full"), last
    assert "the checkpoint of step 3 is kept" in last
    assert f"resume with: python -m utils.model_zoo.train {KILLED.name}" in last
    assert sorted(p.name for p in run.iterdir()) == [tr.CHECKPOINT, "train_log.csv"]
    assert checkpoint_meta(run)["step"] == 3 and not out.exists()


@pytest.mark.parametrize("error", NO_SPACE)
def test_a_full_disk_while_writing_the_model_leaves_no_half_file_and_the_rerun_writes_it(
    tmp_path, monkeypatch, capsys, error
):
    from transformers import PreTrainedModel

    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    spec = tiny("gpt2")
    monkeypatch.setitem(SPECS, spec.name, spec)
    real = PreTrainedModel.save_pretrained

    def full(self, folder, *args, **kwargs):
        Path(folder).mkdir(parents=True, exist_ok=True)
        (Path(folder) / "model.safetensors").write_bytes(b"half a model")
        raise NO_SPACE[error]()

    monkeypatch.setattr(PreTrainedModel, "save_pretrained", full)
    runs, out = tmp_path / "runs", tmp_path / "model"
    args = [spec.name, "--device", "cpu", "--runs", str(runs), "--out", str(out)]
    assert tr.main(args) == 1
    last = last_line(capsys.readouterr().err)
    assert last.startswith(f"python -m utils.model_zoo.train: error: the disk holding {out} is full"), last
    assert f"{runs / spec.name} keeps the checkpoint of step 6 (the end of training)" in last
    assert f"resume with: python -m utils.model_zoo.train {spec.name}" in last
    assert not out.exists() or not any(out.rglob("*")), "a half-written model was left"
    monkeypatch.setattr(PreTrainedModel, "save_pretrained", real)
    assert tr.main(args) == 0
    assert f"resuming {spec.name} at step 6/6" in capsys.readouterr().err
    assert load_file(out / "model.safetensors").keys()
