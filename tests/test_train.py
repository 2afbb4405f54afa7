"""Training: seeded, resumable to the bit, writes a loadable model directory."""

import csv
import json

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from utils import train as tr
from utils.registry import Spec
from utils.tokenizer import load_tokenizer

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
    tr.train(spec, run_dir=straight, out_dir=tmp_path / "m1", evaluate=False, device="cpu")
    halves = tmp_path / "halves"
    assert tr.train(spec, run_dir=halves, evaluate=False, device="cpu", max_steps=3) is None
    assert checkpoint_meta(halves)["step"] == 3
    tr.train(spec, run_dir=halves, out_dir=tmp_path / "m2", evaluate=False, device="cpu")
    a, b = weights(straight), weights(halves)
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_training_logs_a_loss_curve_that_goes_down(tmp_path):
    spec = Spec("tiny", "gpt2", TINY["gpt2"], seed=1, data_seed=2, tokens=40 * 8 * 32, batch=8, n_ctx=32, lr=3e-3)
    out = tr.train(spec, run_dir=tmp_path / "run", out_dir=tmp_path / "model", evaluate=False, device="cpu")
    rows = list(csv.DictReader(open(out / "train_log.csv")))
    assert [int(r["step"]) for r in rows] == list(range(10, 41, 10))
    assert float(rows[-1]["loss"]) < float(rows[0]["loss"]) - 0.5
    meta = json.loads((out / "training.json").read_text())
    assert meta["training"]["tokens"] == 40 * 8 * 32 and meta["training"]["seed"] == 1


@pytest.mark.parametrize("arch", ["gpt2", "llama", "attn-only"])
def test_every_architecture_trains_and_saves_float16_safetensors(tmp_path, arch):
    out = tr.train(tiny(arch), run_dir=tmp_path / "run", out_dir=tmp_path / "model", evaluate=False, device="cpu")
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
            evaluate=False,
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
