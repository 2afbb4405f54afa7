"""Bad input, in one table: each case ends in one sentence naming the problem and the fix,
the exit code says it failed, no traceback is printed and nothing is left half-written."""

from __future__ import annotations

import json
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from utils import paths
from utils.corpora import storyworld as sw
from utils.corpora.tokenizer import TokenizerMissing
from utils.model_zoo import models
from utils.model_zoo.models import ZooError, load_model
from utils.paths import ROOT

GOOD_LINE = sw.sample(0, 0).to_json() + "\n"

# ``python -m utils.model_zoo.train`` with the course's folders moved into the test's own folder
# (TEST_RUNS, TEST_MODELS, TEST_TOKENIZER_DIR), so no case can touch runs/ or data/.
TRAIN = r"""
import os, sys
from pathlib import Path
from utils import paths
for name in ("RUNS", "MODELS", "TOKENIZER_DIR"):
    if os.environ.get("TEST_" + name):
        setattr(paths, name, Path(os.environ["TEST_" + name]))
from utils.model_zoo.train import main
sys.exit(main(sys.argv[1:]))
"""


@dataclass
class Case:
    """A command line (``{tmp}`` stands for the case's folder), what it is fed and what it must print."""

    command: list[str]
    code: int
    phrase: str  # the last line of stderr contains this ("" for a quiet exit)
    stdin: bytes = b""
    files: dict[str, str] = field(default_factory=dict)  # made in {tmp} first: name -> "file" or "folder"
    env: dict[str, str] = field(default_factory=dict)
    action: str = ""  # "read 2 lines, close": ``| head -2``; "ctrl-c after X": SIGINT once X is printed
    stdout: str = ""  # stdout contains this (the lines after a bad one are still scored)
    leaves: tuple[str, ...] = ()  # what the command may add to {tmp}


def storyworld(*args: str) -> list[str]:
    return [sys.executable, "-m", "utils.corpora.storyworld", *args]


def module(name: str, *args: str) -> list[str]:
    return [sys.executable, "-m", f"utils.{name}", *args]


def train(*args: str) -> list[str]:
    return [sys.executable, "-c", TRAIN, *args]


MOVED = {"TEST_RUNS": "{tmp}/runs", "TEST_MODELS": "{tmp}/models"}
QUICK = ["storyworld-4l", "--device", "cpu"]
GIVE_A_LINE = 'give one JSON object per line like {"text": "Ann was in the park."}'

CASES = {
    "score plain text": Case(
        storyworld("score"),
        1,
        f"line 1: not JSON (Expecting value at column 1); {GIVE_A_LINE}, or pass --plain for one text per line",
        stdin=b"Ann was in the park.\n" + GOOD_LINE.encode(),
        stdout='"logprob"',
    ),
    "score binary junk": Case(
        storyworld("score"),
        1,
        'line 1: not UTF-8 text (byte 0xff at column 1); give UTF-8 JSON lines like {"text": "Ann was in the park."}',
        stdin=b"\xff\xfe\x00\x01junk\x9c\n" + GOOD_LINE.encode(),
        stdout='"logprob"',
    ),
    "score an object without text": Case(
        storyworld("score"), 1, f'line 1: no "text" in {{"foo":1}}; {GIVE_A_LINE}', stdin=b'{"foo":1}\n'
    ),
    "score an array": Case(
        storyworld("score"), 1, f"line 1: a JSON array, not an object; {GIVE_A_LINE}", stdin=b"[1,2]\n"
    ),
    "score a number as text": Case(
        storyworld("score"), 1, f'line 1: "text" is a number, not a string; {GIVE_A_LINE}', stdin=b'{"text":5}\n'
    ),
    "score a text the generator cannot write": Case(
        storyworld("score"),
        1,
        "line 2: not a Storyworld document: at character 3 expected ' was', ' and', ' A' or 198 more, "
        "found '.'; only texts that `python -m utils.corpora.storyworld sample` writes can be scored",
        stdin=GOOD_LINE.encode() + b'{"text": "Ann."}\n',
        stdout='"logprob"',
    ),
    "score plain text that goes wrong at once": Case(
        storyworld("score", "--plain"),
        1,
        "line 1: not a Storyworld document: at character 0 expected 'Ann', 'Bob', 'Cara' or 200 more, "
        "found 'Hello world.'",
        stdin=b"Hello world.\n",
    ),
    "sample into head -2": Case(storyworld("sample", "--seed", "1", "--n", "100000"), 141, "", action="read 2 lines"),
    "ctrl-c during sample": Case(
        storyworld("sample", "--seed", "1", "--n", "10000000"), 130, "", action="ctrl-c after {"
    ),
    "train with a negative budget": Case(
        train(*QUICK, "--tokens", "-5"),
        2,
        "argument --tokens: must be a positive number of tokens, got -5; leave --tokens out for the full budget",
        env=MOVED,
    ),
    "train on a device that does not exist": Case(
        train("storyworld-4l", "--device", "banana", "--tokens", "1000"),
        2,
        "argument --device: unknown device 'banana': this machine has: cpu",
        env=MOVED,
    ),
    "train on CUDA without a GPU": Case(
        train("storyworld-4l", "--device", "cuda:7", "--tokens", "1000"),
        2,
        "argument --device: device 'cuda:7' is not available on this machine",
        env=MOVED,
    ),
    "train with a zero budget": Case(
        train(*QUICK, "--tokens", "0"), 2, "must be a positive number of tokens, got 0", env=MOVED
    ),
    "train when runs is a file": Case(
        train(*QUICK, "--tokens", "1000"),
        1,
        "error: cannot keep checkpoints in {tmp}/runs/storyworld-4l: {tmp}/runs is a file, not a folder; "
        "move it away or pass --runs a folder you can write to",
        files={"runs": "file"},
        env=MOVED,
    ),
    "train into an unwritable --out": Case(
        train(*QUICK, "--tokens", "1000", "--out", "{tmp}/taken/model"),
        1,
        "error: cannot write the model to {tmp}/taken/model: {tmp}/taken is a file, not a folder; "
        "pass --out a folder you can write to",
        files={"taken": "file"},
        env=MOVED,
    ),
    "train into a file system that refuses even root": Case(
        train(*QUICK, "--tokens", "1000", "--out", "/proc/x/model"),
        1,
        "error: cannot write the model to /proc/x/model: /proc is not writable",
        env=MOVED,
    ),
    "train without a tokenizer": Case(
        train(*QUICK, "--tokens", "1000"),
        1,
        "error: the course tokenizer is missing: there is no {tmp}/tokenizer/tokenizer.json; restore it with "
        "`git checkout -- {tmp}/tokenizer` or rebuild it with: python -m utils.corpora.tokenizer",
        files={"tokenizer": "folder"},
        env={**MOVED, "TEST_TOKENIZER_DIR": "{tmp}/tokenizer"},
    ),
    "sample a number that is not one": Case(
        storyworld("sample", "--seed", "1", "--n", "abc"), 2, "argument --n: must be a positive integer, got 'abc'"
    ),
    "evaluate a name outside the zoo": Case(
        module("cards.model_cards", "nope"),
        2,
        "argument name: 'nope' is not a zoo model; the zoo: storyworld-attn2l, storyworld-4l",
    ),
    "evaluate on no documents": Case(
        module("cards.model_cards", "storyworld-attn2l", "--docs", "0"),
        2,
        "argument --docs: must be a positive integer, got '0'",
    ),
    "evaluate on a negative number of documents": Case(
        module("cards.model_cards", "storyworld-attn2l", "--docs", "-5"), 2, "must be a positive integer, got '-5'"
    ),
    "train an SAE on a negative budget": Case(
        module("model_zoo.saes", "storyworld-4l-res3-topk", "--tokens", "-3"),
        2,
        "argument --tokens: must be a positive integer, got '-3'",
    ),
    "run a notebook that is not there": Case(
        module("course", "--skip-zoo", "{tmp}/missing.ipynb"), 1, "error: {tmp}/missing.ipynb"
    ),
    "bundle into a path that is a file": Case(
        module("course.bundle", "--out", "{tmp}/taken"),
        1,
        "bundle: --out {tmp}/taken is a file, not a folder; pass --out a folder you can write to",
        files={"taken": "file"},
    ),
    "ctrl-c during train": Case(
        train(*QUICK, "--tokens", "10000000"),
        130,
        "with: python -m utils.model_zoo.train storyworld-4l --tokens 10000000 --device cpu",
        env=MOVED,
        action="ctrl-c after training storyworld-4l",
        leaves=("runs", "runs/storyworld-4l", "runs/storyworld-4l/train_log.csv"),
    ),
}


def snapshot(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


def read_until(stream, text: bytes, seconds: float = 120) -> bytes:
    """Read from a pipe until ``text`` has appeared (tqdm writes bars without newlines)."""
    got, deadline = b"", time.monotonic() + seconds
    while text not in got:
        ready, _, _ = select.select([stream], [], [], max(0.0, deadline - time.monotonic()))
        chunk = os.read(stream.fileno(), 4096) if ready else b""
        if not chunk:
            raise AssertionError(f"{text!r} never appeared: {got[-2000:]!r}")
        got += chunk
    return got


def at(text: str, tmp: Path) -> str:
    """``text`` with ``{tmp}`` standing for the case's folder."""
    return text.replace("{tmp}", str(tmp))


def run_case(case: Case, tmp: Path) -> tuple[int, str, str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", **{k: at(v, tmp) for k, v in case.env.items()}}
    stdin = subprocess.DEVNULL if case.action else subprocess.PIPE
    command = [at(a, tmp) for a in case.command]
    proc = subprocess.Popen(
        command,
        cwd=ROOT,
        env=env,
        stdin=stdin,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        # Ctrl-C as in a terminal, even when the suite itself runs as a background job (which ignores SIGINT)
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    if case.action == "read 2 lines":
        lines = [proc.stdout.readline() for _ in range(2)]
        proc.stdout.close()  # what head does after its second line
        err = proc.stderr.read()
        return proc.wait(60), b"".join(lines).decode(), err.decode()
    if case.action.startswith("ctrl-c after "):
        marker = case.action.removeprefix("ctrl-c after ").encode()
        source = proc.stdout if marker == b"{" else proc.stderr
        early = read_until(source, marker)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=120)
        if source is proc.stdout:
            out = early + out
        else:
            err = early + err
        return proc.returncode, out.decode(), err.decode()
    out, err = proc.communicate(case.stdin, timeout=120)
    return proc.returncode, out.decode(), err.decode(errors="replace")


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_bad_input_ends_in_one_sentence_with_the_fix_and_a_failing_exit_code(case, tmp_path):
    for name, kind in case.files.items():
        (tmp_path / name).mkdir() if kind == "folder" else (tmp_path / name).write_text("")
    before = snapshot(tmp_path)
    code, out, err = run_case(case, tmp_path)
    assert code == case.code, err[-3000:]
    assert "Traceback" not in err and "Exception ignored" not in err, err[-3000:]
    last = err.replace("\r", "\n").strip().splitlines()[-1] if err.strip() else ""
    phrase = at(case.phrase, tmp_path)
    if phrase:
        assert phrase in last, last
    else:
        assert err == "", err
    assert case.stdout in out
    if "sample" in case.command and out:  # whatever reached the reader is whole lines of JSON
        assert out.endswith("\n") and all(json.loads(line) for line in out.splitlines())
    assert snapshot(tmp_path) == sorted(before + list(case.leaves)), "left behind"


def test_a_bad_line_is_named_by_its_number_and_the_lines_after_it_are_still_scored():
    lines = [GOOD_LINE, "not json\n", GOOD_LINE, '{"text": "Bob."}\n', GOOD_LINE]
    r = subprocess.run(storyworld("score"), input="".join(lines), capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 1
    assert [x.split(":")[0] for x in r.stderr.splitlines()] == ["line 2", "line 4"]
    assert r.stdout.count("\n") == 3


def test_a_flood_of_bad_lines_is_summarised_after_ten():
    r = subprocess.run(storyworld("score"), input="x\n" * 25, capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 1
    assert r.stderr.splitlines()[10:] == ["15 more lines could not be scored (25 in all)"]


def test_a_text_the_generator_cannot_write_is_reported_in_a_short_sentence_at_the_right_place():
    with pytest.raises(sw.ParseError) as e:
        sw.score("Ann.")
    assert e.value.at == 3 and e.value.found == "." and len(str(e.value)) < 120
    assert "-1" not in str(e.value)
    with pytest.raises(sw.ParseError) as e:
        sw.score(sw.sample(1, 0).text + " Ann smiled.")
    assert e.value.at == len(sw.sample(1, 0).text) and "expected the end of the text" in str(e.value)


# ---------------------------------------------------------------------------------------
# Loading models: the same promise for the functions a notebook calls.


@pytest.fixture
def copied_zoo(copy_zoo_model):
    """storyworld-4l (an HF-format model) in a folder of the test's own."""
    return copy_zoo_model("storyworld-4l")


def no_tokenizer(folder, monkeypatch):
    (folder.parent / "tokenizer").mkdir()
    monkeypatch.setattr(paths, "TOKENIZER_DIR", folder.parent / "tokenizer")


def no_config(folder, monkeypatch):
    (folder / "config.json").unlink()


def broken_card(folder, monkeypatch):
    (folder / "card.json").write_text('{"name": "storyworld-4l",')


def cut_config(folder, monkeypatch):
    (folder / "config.json").write_text('{"activation_function": "gelu_new",')


def card_with_another_format(folder, monkeypatch):
    card = json.loads((folder / "card.json").read_text())
    (folder / "card.json").write_text(json.dumps({**card, "format": "weird"}))


def card_without_checksum(folder, monkeypatch):
    card = json.loads((folder / "card.json").read_text())
    del card["weights_sha256"]
    (folder / "card.json").write_text(json.dumps(card))


LOADING = {
    "tokenizer.json missing": (
        no_tokenizer,
        TokenizerMissing,
        "the course tokenizer is missing: there is no {tmp}/tokenizer/tokenizer.json; restore it with "
        "`git checkout -- {tmp}/tokenizer` or rebuild it with: python -m utils.corpora.tokenizer",
    ),
    "config.json missing": (
        no_config,
        ZooError,
        "zoo model 'storyworld-4l' is incomplete: {tmp}/storyworld-4l/config.json is missing; restore it with "
        "`git checkout -- {tmp}/storyworld-4l/config.json` or rebuild the model with: "
        "python -m utils.model_zoo.train storyworld-4l",
    ),
    "card.json broken": (
        broken_card,
        ZooError,
        "the card of storyworld-4l is not valid JSON ({tmp}/storyworld-4l/card.json, line 1 column 26: "
        "Expecting property name enclosed in double quotes); restore it with "
        "`git checkout -- {tmp}/storyworld-4l/card.json` or rewrite it with: "
        "python -m utils.cards.model_cards storyworld-4l --write-card",
    ),
    "card.json without a checksum": (card_without_checksum, ZooError, "lacks weights_sha256; restore it with"),
    "config.json cut off": (
        cut_config,
        ZooError,
        "the config of zoo model 'storyworld-4l' is not valid JSON ({tmp}/storyworld-4l/config.json, line 1 column "
        "36: Expecting property name enclosed in double quotes); restore it with `git checkout -- "
        "{tmp}/storyworld-4l/config.json` or rebuild the model with: python -m utils.model_zoo.train storyworld-4l",
    ),
    "card.json with an unknown format": (
        card_with_another_format,
        ZooError,
        "gives the weights' format as 'weird', not one of hf, native; restore it with",
    ),
}


@pytest.mark.parametrize("damage, error, message", LOADING.values(), ids=LOADING.keys())
@pytest.mark.parametrize("verify", [True, False], ids=["verified", "unverified"])
def test_a_damaged_zoo_model_fails_in_one_sentence_with_the_fix(
    copied_zoo, monkeypatch, tmp_path, damage, error, message, verify
):
    damage(copied_zoo, monkeypatch)
    with pytest.raises(error) as e:
        load_model("storyworld-4l", device="cpu", verify=verify)
    assert at(message, tmp_path) in str(e.value) and "\n" not in str(e.value)


def test_without_a_network_an_unknown_name_fails_after_one_connection_attempt(monkeypatch):
    from huggingface_hub import constants
    from huggingface_hub.utils import close_session

    attempts = []

    def refuse(sock, address):
        attempts.append(address)
        raise ConnectionRefusedError(111, "Connection refused")

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(socket, "getaddrinfo", lambda host, port, *a, **k: [(2, 1, 6, "", ("127.0.0.1", port))])
    monkeypatch.setattr(socket.socket, "connect", refuse)
    close_session()  # no pooled connection from an earlier test
    with pytest.raises(ValueError) as e:
        load_model("nope", device="cpu")
    close_session()
    message = str(e.value)
    assert len(attempts) == 1, attempts  # the hub library alone retries for minutes
    assert message.startswith("unknown model 'nope': the hub at https://huggingface.co cannot be reached")
    assert all(name in message for name in models.zoo()) and "loads offline" in message
    assert "\n" not in message


@pytest.mark.parametrize("device", ["banana", "cuda:7", "mps:3", 5])
def test_a_device_this_machine_lacks_is_named_with_what_it_has_and_no_retrain_is_advised(device):
    with pytest.raises(ValueError) as e:
        load_model("storyworld-attn2l", device=device)
    message = str(e.value)
    assert f"this machine has: {', '.join(models.available_devices())}" in message
    assert "Rebuild" not in message and "\n" not in message


def test_a_device_name_in_capitals_is_accepted():
    assert models.check_device("CPU") == "cpu" and models.check_device(None) == models.default_device()


@pytest.mark.parametrize("name", [None, 4, "", "  "])
def test_a_model_name_that_is_not_a_name_says_what_a_name_looks_like(name):
    with pytest.raises(ValueError, match="load_model needs a model's name, a string such as 'storyworld-4l'"):
        load_model(name, device="cpu")


def test_a_near_miss_of_a_hub_name_asks_did_you_mean_without_asking_the_hub(monkeypatch):
    monkeypatch.setattr(models, "_load_hub", lambda *a: pytest.fail("the hub was asked"))
    with pytest.raises(ValueError, match=r"unknown model 'gpt2-smal' \(did you mean 'gpt2-small'\?\)"):
        load_model("gpt2-smal", device="cpu")


def test_offline_a_hub_alias_is_called_a_hub_model_not_in_the_cache_never_unknown(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))  # an empty cache
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    with pytest.raises(ValueError) as e:
        load_model("gpt2-small", device="cpu")
    message = str(e.value)
    assert message.startswith("'gpt2-small' is a Hugging Face hub model (gpt2) that is not in this machine's hub cache")
    assert "HF_HUB_OFFLINE=1 is set" in message and "unknown" not in message and "\n" not in message


def test_folder_with_a_hub_name_is_refused_not_ignored(tmp_path):
    with pytest.raises(ValueError, match="folder= loads a zoo model's own files"):
        load_model("gpt2", device="cpu", folder=tmp_path)


@pytest.mark.parametrize("name, hub_id", [("gpt2", "gpt2"), ("gpt2-medium", "gpt2-medium")])
def test_offline_a_bare_hub_id_is_called_a_hub_model_not_in_the_cache_never_unknown(
    monkeypatch, tmp_path, name, hub_id
):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))  # an empty cache
    with pytest.raises(ValueError) as e:
        load_model(name, device="cpu")
    message = str(e.value)
    assert message.startswith(
        f"'{name}' is a Hugging Face hub model ({hub_id}) that is not in this machine's hub cache"
    )
    assert "HF_HUB_OFFLINE=1 is set" in message and "unknown" not in message and "\n" not in message


def test_offline_any_name_shaped_like_a_hub_id_is_called_not_cached_never_unknown(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    with pytest.raises(ValueError) as e:
        load_model("tinystories-33m", device="cpu")
    message = str(e.value)
    assert "'tinystories-33m' is not a zoo model or a folder here" in message
    assert "not in this machine's hub cache, and HF_HUB_OFFLINE=1 is set" in message
    assert "unknown" not in message and "\n" not in message


def test_without_a_network_a_bare_hub_id_is_called_not_cached_never_unknown(monkeypatch, tmp_path):
    from huggingface_hub import constants

    def refuse(sock, address):
        raise AssertionError(f"a connection to {address} was attempted")

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setattr(models, "hub_unreachable", lambda: "ConnectError: [Errno 111] Connection refused")
    monkeypatch.setattr(socket.socket, "connect", refuse)
    with pytest.raises(ValueError) as e:
        load_model("gpt2", device="cpu")
    message = str(e.value)
    assert message.startswith(
        "'gpt2' is a Hugging Face hub model (gpt2) that is not in this machine's hub cache, and the hub at "
        "https://huggingface.co cannot be reached (ConnectError: [Errno 111] Connection refused)"
    )
    assert "unknown" not in message and "\n" not in message


# ---------------------------------------------------------------------------------------
# Loading a file, or a folder that is not what save_pretrained writes: one sentence, never a silent load.

GGUF = b"GGUF\x03\x00\x00\x00" + bytes(56)  # the magic and version of a GGUF file


def refused(name) -> str:
    """load_model's one sentence for ``name``."""
    with pytest.raises(ValueError) as e:
        load_model(str(name), device="cpu")
    message = str(e.value)
    assert "\n" not in message, message
    return message


@pytest.fixture
def gpt2_folder(random_model_folders, tmp_path):
    """A copy of a random GPT-2 saved with save_pretrained (the Storyworld tokenizer beside it)."""
    folder = tmp_path / "tiny-gpt2"
    shutil.copytree(random_model_folders["gpt2"], folder)
    return folder


def edit_config(folder: Path, **changes) -> None:
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, **changes}))


def test_a_gguf_file_is_called_a_gguf_file_with_how_to_convert_it_not_a_hub_model(tmp_path):
    gguf = tmp_path / "model.gguf"
    gguf.write_bytes(GGUF)
    message = refused(gguf)
    assert message.startswith(f"{gguf} is a GGUF file, which load_model does not load directly"), message
    assert f"AutoModelForCausalLM.from_pretrained('{tmp_path}', gguf_file='model.gguf')" in message
    assert "save_pretrained(" in message and "safe_serialization=True" in message and "hub" not in message


def test_a_path_to_another_file_says_load_model_takes_the_folder_that_holds_it(gpt2_folder):
    weights = gpt2_folder / "model.safetensors"
    message = refused(weights)
    assert message.startswith(f"{weights} is a file: load_model takes a folder written by save_pretrained")
    assert f"load_model('{gpt2_folder}')" in message and "hub" not in message


@pytest.mark.parametrize("beside", [(), ("config.json", "tokenizer.json", "tokenizer_config.json")])
def test_a_folder_holding_gguf_weights_names_gguf(gpt2_folder, tmp_path, beside):
    folder = tmp_path / "quantised"
    folder.mkdir()
    (folder / "model.Q4_0.gguf").write_bytes(GGUF)
    for name in beside:
        shutil.copy(gpt2_folder / name, folder / name)
    message = refused(folder)
    assert "model.Q4_0.gguf, a GGUF file, which load_model does not load directly" in message, message
    assert "gguf_file='model.Q4_0.gguf'" in message


@pytest.mark.parametrize("vocabulary", ["the course's", "another"])
def test_a_folder_without_tokenizer_files_is_refused_never_loaded_with_an_empty_tokenizer(gpt2_folder, vocabulary):
    for path in gpt2_folder.glob("tokenizer*"):
        path.unlink()
    if vocabulary == "another":
        edit_config(gpt2_folder, vocab_size=1000)
    message = refused(gpt2_folder)
    assert message.startswith(f"{gpt2_folder} holds no tokenizer files (tokenizer.json"), message
    assert "tokenizer.save_pretrained(" in message
    course = "corpus_tokenizer('storyworld').save_pretrained("
    assert (course in message) == (vocabulary == "the course's"), message


def test_an_unknown_model_type_names_the_pinned_transformers_and_never_advises_an_upgrade(gpt2_folder):
    from utils.course.versions import TESTED

    edit_config(gpt2_folder, model_type="bananaformer")
    message = refused(gpt2_folder)
    assert "model type 'bananaformer'" in message and f"transformers {TESTED['transformers']}" in message, message
    assert "gpt2" in message and "llama" in message  # what it does know
    assert "pip" not in message and "upgrade" not in message


@pytest.mark.parametrize("damage", ["empty", "cut off"])
def test_empty_or_cut_off_weights_in_a_folder_are_named(gpt2_folder, damage):
    weights = gpt2_folder / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(b"" if damage == "empty" else data[: len(data) // 2])
    message = refused(gpt2_folder)
    assert message.startswith(f"{weights} is {damage}"), message
    assert "save_pretrained(" in message


@pytest.mark.parametrize(
    "change, shapes",
    [
        ({"n_embd": 128}, "transformer.wte.weight is [985, 64] in model.safetensors but [985, 128] by config.json"),
        (
            {"vocab_size": 1200},
            "transformer.wte.weight is [985, 64] in model.safetensors but [1200, 64] by config.json",
        ),
    ],
    ids=["width", "vocabulary"],
)
def test_weights_that_do_not_fit_the_config_are_named_with_both_shapes(gpt2_folder, change, shapes):
    edit_config(gpt2_folder, **change)
    message = refused(gpt2_folder)
    assert message.startswith(f"the weights in {gpt2_folder} do not fit its config.json: "), message
    assert shapes in message, message
