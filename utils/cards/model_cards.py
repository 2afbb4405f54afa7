"""Measure the zoo: the numbers on every model card, recomputed on held-out Storyworld data.

    python -m utils.cards.model_cards                      # check every card against a fresh measurement
    python -m utils.cards.model_cards storyworld-4l --seed 9123 --docs 1000
    python -m utils.cards.model_cards storyworld-4l --write-card   # (re)write card.json and README.md

Every number comes from a function in ``utils.metrics`` (the lessons use the same ones);
which numbers a model's card carries, its targets and tolerances come from ``utils.model_zoo.registry``.

* **loss**: mean NLL of predicting each document's text tokens and its EOS after a BOS.
* **entropy floor**: ``-Σ logprob / Σ tokens`` over the same documents and tokens, with
  each document's exact log-probability under the generator. **gap** = loss − floor.
* **IOI**: on ``transfer`` documents, the logit of the answer (indirect object) minus the
  logit of the distractor (subject) at the end of the prompt; accuracy = share > 0.
* **head scores** on repeated random tokens: ``BOS r r`` with ``r`` a run of distinct
  tokens drawn from Storyworld's content words (``content_word_pool``: names, places,
  objects, emotions, ... but not function words such as " the"), its length (the period,
  10 to 60) drawn per sequence. The card also reports the best induction score when ``r``
  draws from every word token, function words included (``all_word_pool``).
  Previous-token score = mean attention from each position (from 1 on) to the one before it;
  induction score = mean attention from each position of the second copy to the token
  after the same token's first occurrence. **repeat loss drop** = mean loss on the first
  copy minus mean loss on the second (the second copy's first token excluded).
* **emotion probe**: a 12-way linear probe (multinomial logistic regression) on the
  residual stream after each layer, labelled with the sentence subject's current emotion,
  trained on the word tokens (the subject's name and the predicate's words) of narrative
  sentences that do not name the emotion; accuracy on the same kind of tokens in separate
  documents, at the best layer. The card also gives the accuracy by token role and that of
  a probe fitted and tested on all tokens of those sentences, punctuation included.
* **emotion circle** (``utils.metrics.steering``): the 12 class means of the residual stream at
  the subject's name on their top two principal axes, at the stage where their Fisher–Lee
  correlation with the true angles is largest in size; how many emotions keep both true
  neighbours next to them round the picture.
* **steering**: prompts cut before a story names its first feeling ("… Ann felt"), each steered
  to one emotion with the difference of class means at the names, rescaled to a strength × the
  stream's mean norm there and added at the prompt's positions; greedy continuations read
  exactly by the generator's scorer (target rate: the continuation expresses its target;
  fluency: it is still a Storyworld document). The best stage and strength keep at least 90%
  fluency; steering along the circle's plane at that setting gives the Fisher–Lee correlation
  between the angle steered to and the angle the text expresses.
* **IOI circuit** (``utils.metrics.circuit``): every head's and MLP's direct attribution,
  patching effect (names exchanged) and, for heads, mean-ablation cost and attention from
  the final position, on transfer prompts of one template; classes by fixed rules.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import torch
from tqdm.auto import tqdm

from utils import seeds
from utils.corpora import storyworld
from utils.corpora.storyworld import _positive
from utils.corpora.tokenizer import corpus_tokenizer_hash
from utils.metrics.circuit import RULES, ioi_circuit
from utils.metrics.common import tokenizer_of
from utils.metrics.heads import all_word_pool, head_scores, repeated_random_tokens
from utils.metrics.ioi import ioi
from utils.metrics.loss import heldout_loss, song_copy_loss
from utils.metrics.probes import emotion_probe
from utils.metrics.steering import steering_card
from utils.model_zoo import pretrained
from utils.model_zoo.models import ZOO, ZooError, corpus_of, load_model, read_card, sha256_file, zoo
from utils.model_zoo.registry import BELIEFS_MEASUREMENTS, COUNTDOWN_MEASUREMENTS, entry
from utils.paths import MODELS

PROBE_TRAIN_DOCS = 1000  # narrative documents the emotion probe is fitted on


def measure(
    name: str,
    model=None,
    seed: int = seeds.EVAL,
    n_docs: int = 2000,
    n_random: int = 100,
    progress: bool = True,
    n_prompts: int = 48,
    steering_settings: list[tuple[int, float]] | None = None,
    every_draw: bool = True,
    ranked_heads: bool = True,
) -> dict:
    """Every number the card of ``name`` reports, measured on held-out data from ``seed``
    (a countdown card's mean over every draw of random heads is left out if ``every_draw`` is False,
    and every number resting on ranking its heads if ``ranked_heads`` is False)."""
    model = model if model is not None else load_model(name)
    steps = entry(name).measurements
    if steps == COUNTDOWN_MEASUREMENTS:
        return measure_countdown(model, seed, n_docs, progress, name, every_draw, ranked_heads)
    if steps == BELIEFS_MEASUREMENTS:
        from utils.metrics.beliefs import beliefs_card

        return {"seed": seed, **beliefs_card(model, seed, n_docs)}
    bar = tqdm(steps, desc=f"measuring {name}", disable=not progress, leave=False)
    out: dict = {"seed": seed, "docs": n_docs}
    docs = storyworld.sample_docs(seed, n_docs)
    for step in bar:
        bar.set_postfix_str(step)
        if step == "loss":
            out.update(heldout_loss(model, docs))
            out.update(song_copy_loss(model, docs))
        elif step == "heads":
            out.update(_head_measurements(model, seeds.RANDOM_TOKENS if seed == seeds.EVAL else seed + 2, n_random))
        elif step == "ioi":
            out.update(ioi(model, docs))
        elif step == "probe":
            # The probe's own training set has a fixed size, whatever the evaluation sample.
            train_seed = seeds.PROBE_TRAIN if seed == seeds.EVAL else seed + 1
            probe_train = storyworld.sample_docs(train_seed, PROBE_TRAIN_DOCS, "narrative")
            test = [d for d in docs if d.family == "narrative"][: max(200, n_docs // 4)]
            out.update(emotion_probe(model, probe_train, test))
        elif step == "steering":
            train_seed = seeds.PROBE_TRAIN if seed == seeds.EVAL else seed + 1
            prompt_seed = seeds.STEERING_PROMPTS if seed == seeds.EVAL else seed + 3
            out.update(steering_card(model, train_seed, prompt_seed, n_prompts=n_prompts, settings=steering_settings))
    return out


def measure_countdown(
    model,
    seed: int = seeds.EVAL,
    n_traces: int = 2000,
    progress: bool = True,
    name: str = "countdown-llama",
    every_draw: bool = True,
    ranked_heads: bool = True,
) -> dict:
    """The countdown model's card: lesson 08's analysis on held-out traces of ``seed`` (the
    verdict probe is fitted on traces of another held-out seed)."""
    from utils.metrics.countdown import countdown_card

    train_seed = seeds.PROBE_TRAIN if seed == seeds.EVAL else seed + 1
    bar = tqdm(total=8 if ranked_heads else 7, desc=f"measuring {name}", disable=not progress, leave=False)

    def step(name):
        bar.set_postfix_str(name)
        bar.update(1)

    out = countdown_card(
        model, seed, train_seed, n_traces=n_traces, progress=step, every_draw=every_draw, ranked_heads=ranked_heads
    )
    bar.close()
    return out


def _head_measurements(model, seed: int, n_random: int) -> dict:
    """Head scores on content words, on all words and on song-like sequences, and the best heads
    (the sequences in the model's own tokens)."""
    tok = tokenizer_of(model)
    h = head_scores(model, repeated_random_tokens(n_random, seed=seed, tokenizer=tok))
    out = dict(h)
    wide = head_scores(model, repeated_random_tokens(n_random // 2, seed=seed, pool=all_word_pool(tok), tokenizer=tok))
    for suffix, scores in (("", h), ("_all_words", wide)):  # the best head of each kind, and its score
        for score, key in (("prev_token", "prev_token_scores"), ("induction", "induction_scores")):
            table = torch.tensor(scores[key])
            out[f"{score}_score{suffix}"] = table.max().item()
            out[f"{score}_head{suffix}"] = list(divmod(int(table.argmax()), table.shape[1]))
    out.update({f"{k}_all_words": wide[k] for k in ("loss_first_copy", "loss_second_copy", "repeat_loss_drop")})
    song = head_scores(model, repeated_random_tokens(n_random, seed=seed, song_like=True, tokenizer=tok))
    out["induction_score_song_like"] = max(max(row) for row in song["induction_scores"])
    out.update({f"{k}_song_like": song[k] for k in ("loss_first_copy", "loss_second_copy", "repeat_loss_drop")})
    prev, ind = torch.tensor(h["prev_token_scores"]), torch.tensor(h["induction_scores"])
    out["prev_token_score_layer0"] = prev[0].max().item()
    if prev.shape[0] > 1:
        i1 = int(ind[1].argmax())
        out["induction_head_layer1"] = [1, i1]
        out["induction_score_layer1"] = ind[1, i1].item()
    return out


def check_targets(name: str, metrics: dict) -> dict:
    """{metric: {"target": "<= 0.1", "value": v, "met": bool}} for the model's targets; a target
    the registry lists as missed also carries its reason under "missed"."""
    model, res = entry(name), {}
    for metric, (op, thr) in model.targets.items():
        v = metrics.get(metric)
        met = v is not None and (v >= thr if op == ">=" else v <= thr)
        res[metric] = {"target": f"{op} {thr}", "value": v, "met": bool(met)}
        if metric in model.missed:
            res[metric]["missed"] = model.missed[metric]
    return res


def architecture(model) -> dict:
    c = model.cfg
    keys = [
        "n_layers",
        "d_model",
        "n_heads",
        "d_head",
        "d_mlp",
        "n_ctx",
        "d_vocab",
        "normalization_type",
        "positional_embedding_type",
        "act_fn",
        "attn_only",
        "gated_mlp",
        "n_key_value_heads",
        "original_architecture",
    ]
    return {k: getattr(c, k, None) for k in keys}


def write_card(name: str, model_dir: Path | None = None) -> dict:
    """Measure ``name`` and write ``card.json`` and ``README.md`` into its directory."""
    folder = Path(model_dir or MODELS / name)
    training = json.loads((folder / "training.json").read_text())
    card = {
        "name": name,
        "format": training["format"],
        "arch": training["arch"],
        "weights_sha256": sha256_file(folder / "model.safetensors"),
        "tokenizer_sha256": corpus_tokenizer_hash(corpus_of(name)),
    }
    (folder / "card.json").write_text(json.dumps(card, indent=1))  # so load_model verifies
    model = load_model(name, folder=folder)
    t = time.time()
    metrics = measure(name, model)
    card.update(
        architecture=architecture(model),
        n_params=training["n_params"],
        n_params_without_embeddings=training["n_params"] - _embedding_params(model),
        training=training["training"],
        lessons=list(entry(name).lessons),
        eval=metrics,
        eval_seconds=round(time.time() - t, 1),
        targets=check_targets(name, metrics),
    )
    if "ioi" in entry(name).measurements:
        card["ioi_circuit"] = ioi_circuit(model, seeds.EVAL, seeds.CIRCUIT_REFERENCE)
    (folder / "card.json").write_text(json.dumps(card, indent=1))
    (folder / "README.md").write_text(card_markdown(card))
    return card


def _embedding_params(model) -> int:
    c = model.cfg
    pos = c.n_ctx * c.d_model if c.positional_embedding_type == "standard" else 0
    return 2 * c.d_vocab * c.d_model + pos


def card_header(card: dict, architecture: str, corpus: str, sample: str) -> list[str]:
    """The rows every card opens with: what the model is, how it was trained, its held-out loss."""
    tr, ev = card["training"], card["eval"]
    return [
        f"# {card['name']}",
        "",
        "Generated by `python -m utils.cards.model_cards " + card["name"] + " --write-card` from `card.json`; "
        "do not edit by hand.",
        "",
        "| | |",
        "|---|---|",
        f"| architecture | {card['arch']} ({card['format']} checkpoint), {architecture} |",
        f"| parameters | {card['n_params']:,} ({card['n_params_without_embeddings']:,} without embeddings) |",
        f"| training | {tr['tokens']:,} tokens, {tr['steps']} steps of {tr['batch']}×{tr['n_ctx']}, "
        f"lr {tr['lr']}, seed {tr['seed']}, {corpus} seed {tr['data_seed']} |",
        f"| training time | {tr['seconds'] / 60:.1f} min on {tr['device']}, "
        f"{'bf16 autocast' if tr['precision'] == 'bf16' else 'float32'} |",
        f"| held-out loss | {ev['loss']:.4f} nats/token ({corpus} seed {ev['seed']}, {sample}, "
        f"{ev['tokens']:,} tokens) |",
        f"| entropy floor | {ev['floor']:.4f} nats/token; gap {ev['gap']:.4f} |",
    ]


def card_markdown(card: dict) -> str:
    if "verdict_accuracy" in card["eval"]:
        return countdown_card_markdown(card)
    if "accuracy_false" in card["eval"]:
        return beliefs_card_markdown(card)
    a, ev = card["architecture"], card["eval"]
    lines = card_header(
        card,
        f"{a['n_layers']} layers, d_model {a['d_model']}, {a['n_heads']} heads × {a['d_head']}"
        + (f", d_mlp {a['d_mlp']}" if not a.get("attn_only") else ", attention only"),
        "Storyworld",
        f"{ev['docs']} docs",
    ) + [
        f"| IOI | accuracy {ev['ioi_accuracy']:.1%}, mean logit difference {ev['ioi_logit_diff']:.2f} "
        f"({ev['ioi_prompts']} prompts) |",
        f"| previous-token head | L{ev['prev_token_head'][0]}H{ev['prev_token_head'][1]}, score "
        f"{ev['prev_token_score']:.3f} (best in layer 0: {ev['prev_token_score_layer0']:.3f}) |",
        f"| induction head | L{ev['induction_head'][0]}H{ev['induction_head'][1]}, score {ev['induction_score']:.3f} |",
        f"| repeated random tokens (content words) | loss {ev['loss_first_copy']:.2f} → {ev['loss_second_copy']:.2f} "
        f"(drop {ev['repeat_loss_drop']:.2f}) |",
        f"| same, drawn from all words incl. function words | previous-token head "
        f"L{ev['prev_token_head_all_words'][0]}H{ev['prev_token_head_all_words'][1]} "
        f"{ev['prev_token_score_all_words']:.3f}, induction head "
        f"L{ev['induction_head_all_words'][0]}H{ev['induction_head_all_words'][1]} "
        f"{ev['induction_score_all_words']:.3f}; loss {ev['loss_first_copy_all_words']:.2f} → "
        f"{ev['loss_second_copy_all_words']:.2f} (drop {ev['repeat_loss_drop_all_words']:.2f}) |",
        f"| same, first word unspaced as at the start of a song | induction score "
        f"{ev['induction_score_song_like']:.3f}, loss {ev['loss_first_copy_song_like']:.2f} → "
        f"{ev['loss_second_copy_song_like']:.2f} (drop {ev['repeat_loss_drop_song_like']:.2f}) |",
        f"| Storyworld songs (held out) | loss on the first copy {ev['song_loss_first_copy']:.2f} → second copy "
        f"{ev['song_loss_second_copy']:.2f}; a uniform guess over the {len(storyworld.SONG_WORDS)} song words costs "
        f"{math.log(len(storyworld.SONG_WORDS)):.2f} |",
    ]
    if "emotion_probe_accuracy" in ev:
        roles = ev["emotion_probe_accuracy_by_role"]
        lines.append(
            f"| emotion probe (12-way, unnamed) | {ev['emotion_probe_accuracy']:.1%} after layer "
            f"{ev['emotion_probe_layer']} on the {ev['emotion_probe_test_tokens']:,} word tokens "
            "(subject and predicate) of sentences that do not name the emotion "
            f"(subject {roles['subject']:.1%}, predicate {roles['predicate']:.1%}); on all their tokens, "
            f"punctuation included: {ev['emotion_probe_accuracy_all_tokens']:.1%} |"
        )
        lines.append(
            "| emotion probe by story | "
            + ", ".join(f"{k} {v:.1%}" for k, v in ev["emotion_probe_accuracy_by_cast"].items())
            + " |"
        )
    if "steering_stage" in ev:
        stage = ev["emotion_circle_stage"]
        lines.append(
            f"| emotion circle at the names | {ev['emotion_circle_neighbours']}/12 emotions between their true "
            "neighbours, "
            f"Fisher–Lee correlation with the true angles {ev['emotion_circle_correlation']:.3f} (in size), "
            f"{ev['emotion_circle_variance_in_two']:.0%} of the class means' variance in two components; "
            f"{_stage(stage)} |"
        )
        lines.append(
            "| steering (difference of means at the names, added at the prompt) | "
            f"best {_stage(ev['steering_stage'])}, "
            f"strength {ev['steering_strength']:g} × the stream's norm: {ev['steering_target_rate']:.0%} of "
            f"{ev['steering_prompts']} continuations express their target, {ev['steering_fluency']:.0%} valid; "
            "along the circle's plane at that stage and strength, Fisher–Lee correlation "
            f"{ev['steering_circle_correlation']:.3f} between the angle steered to and the angle expressed |"
        )
    lines += checksums_and_targets(card)
    if "ioi_circuit" in card:
        lines += ["", "## IOI circuit"]
        for order, circuit in card["ioi_circuit"].items():
            lines += circuit_markdown(circuit, order)
        lines += ["", "Classes, by rule: " + "; ".join(f"*{k}*: {r}" for k, r in RULES.items()) + "."]
    lines += ["", f"Used by lessons: {', '.join(card['lessons'])}.", ""]
    return "\n".join(lines)


def countdown_card_markdown(card: dict) -> str:
    """The countdown model's card: the same header and targets as the others, its own measurements."""
    a, ev = card["architecture"], card["eval"]

    def heads(hs):
        return ", ".join(f"L{layer}H{h}" for layer, h in hs)

    best = next(s for s in ev["steering"] if s["accept_wrong"] == ev["steer_accept_wrong"])
    every_draw = (
        f" ({ev['random3_ablation_drop_every_draw']:.1%} over "
        f"{'a sample of' if ev['random3_draws_every_sampled'] else 'all'} {ev['random3_draws_every']} draws of 3 "
        "from the other heads)"
        if "random3_ablation_drop_every_draw" in ev
        else ""
    )
    th = ev["target_head"]
    lines = card_header(
        card,
        f"{a['n_layers']} layers, d_model {a['d_model']}, {a['n_heads']} heads × {a['d_head']}, gated MLP (SiLU) "
        f"d_mlp {a['d_mlp']}, {a['normalization_type']} norm, {a['positional_embedding_type']} positions",
        "countdown",
        f"{ev['traces']} traces",
    ) + [
        f'| verdicts at "(" (teacher-forced) | {ev["verdict_accuracy"]:.2%} of {ev["verdict_sites"]:,} '
        f"(valid {ev['verdict_accuracy_valid']:.2%}, invalid {ev['verdict_accuracy_invalid']:.2%}); "
        f"a slip on the attempt that works is rejected {ev['verdict_accuracy_slipped_solution']:.1%} of "
        f"{ev['slipped_solution_sites']} times |",
        f"| greedy traces | {ev['greedy_solved']:.1%} of the solvable problems among {ev['greedy_problems']} "
        f'end in a correct "this works"; {ev["greedy_exact"]:.1%} of the traces are the generator\'s own; '
        f"{ev['greedy_arithmetic_error_rate']:.1%} of the attempts written have a wrong result |",
        "| verdict probe by layer (embedding, then after each layer) | "
        + ", ".join(f"{x:.3f}" for x in ev["probe_accuracy_by_layer"])
        + f"; shuffled labels: {', '.join(f'{x:.3f}' for x in ev['probe_shuffled_by_layer'])} "
        f"({ev['probe_sites'][0]} training and {ev['probe_sites'][1]} test sites, balanced) |",
        "| verdict probe on the embeddings of the written result and the target (what the tokens give away) | "
        f"{ev['probe_numbers_accuracy']:.3f}; on the written result's alone {ev['probe_written_accuracy']:.3f} "
        "(a linear probe cannot compare two embeddings, but it learns which numbers are rarely a target) |",
        f"| probe direction through the unembedding (after layer {ev['probe_layer']}) | top "
        + ", ".join(f"`{t!r}`" for t in ev["probe_lens_top"])
        + "; bottom "
        + ", ".join(f"`{t!r}`" for t in ev["probe_lens_bottom"])
        + " |",
        f'| steering with the probe at "(" after layer {ev["probe_layer"]} | at {best["alpha"]:g} × the '
        f"stream's median norm ({ev['steering_scale']:.1f}): {best['accept_wrong']:.0%} of wrong attempts "
        f"accepted; minus the direction: {best['reject_right']:.0%} of right ones rejected; a random "
        f"direction accepts {best['random_accept_wrong']:.0%} (at most "
        f"{ev['steer_random_accept_wrong']:.0%} at any strength) |",
        f"| GLU neurons aligned with the probe | {ev['aligned_neurons']} (top 3% by cosine in layers "
        f"0–{ev['probe_layer']}: {', '.join(map(str, ev['aligned_neuron_layers']))} per layer); AUROC "
        f'{ev["neuron_auroc"]:.3f}; zeroing them at "(" lowers P(this | valid) by '
        f"{ev['neuron_zeroing_drop']:.0%} (from {ev['p_this_valid']:.3f}), random neurons by "
        f"{ev['random_neuron_zeroing_drop']:.0%}. Of the margin this − not on valid attempts "
        f"({ev['margin_valid']:.1f}) they write {ev['neuron_direct_margin']:.1f} directly; zeroed, the margin is "
        f"{ev['neuron_zeroed_margin']:.1f}, or {ev['neuron_zeroed_margin_held_scale']:.1f} with the final norm's "
        f"scale held at its clean value ({ev['neuron_zeroed_flips_held_scale']:.0%} of valid verdicts flip) |",
        f'| heads attending from "(" to the target\'s earlier occurrences | L{th[0]}H{th[1]}: '
        f"{ev['target_head_attention']:.2f} of its attention |",
        f'| heads kept bottom-up (attention above 0.1 from "(" to the target) | '
        f"{heads(ev['previous_occurrence_heads'])}; all of them ablated: "
        f"{ev['kept_heads_ablation_accuracy']:.1%} of valid attempts judged right, "
        f"{ev['kept_heads_ablation_invalid_rejected']:.1%} of invalid ones still rejected |",
        f"| ablating heads (valid attempts judged right, {ev['verdict_accuracy_valid_before']:.1%} before) | "
        f"the paper's top 3 (the kept heads ranked by the receptive field of diag(W_V W_O) on the aligned "
        f"neurons, {heads(ev['top3_receptive_field'])}): {ev['top3_ablation_accuracy']:.1%} "
        f"({ev['top3_ablation_invalid_rejected']:.1%} of invalid ones still rejected); 3 random heads: down "
        f"{ev['random3_ablation_drop']:.1%} on average over 10 draws{every_draw}; top 3 by single-head "
        f"ablation: {heads(ev['top3_single_ablation'])} (overlap {ev['top3_overlap']}). The pick on "
        f"{ev['paper_pick_refits_count']} bootstrap refits of the probe holds "
        f"L{ev['top3_single_ablation'][0][0]}H{ev['top3_single_ablation'][0][1]} in "
        f"{ev['paper_pick_refits_holding_truth_first']}. The course's contrast score (valid-minus-invalid "
        f"output through the norm) picks {heads(ev['top3_receptive_field_contrast'])} "
        f"({ev['top3_ablation_accuracy_contrast']:.1%} after ablation) |",
        f'| generation from a correct result\'s "(" ({ev["generation_prompts"]} traces) | no "this works" '
        f"in {ev['generation_rejects_top3']:.1%} with the top 3 heads ablated, "
        f"{ev['generation_rejects_random3']:.1%} with random heads, {ev['generation_rejects_without_ablation']:.1%} "
        "without |",
    ]
    lines += checksums_and_targets(card)
    lines += ["", f"Used by lessons: {', '.join(card['lessons'])}.", ""]
    return "\n".join(lines)


def beliefs_card_markdown(card: dict) -> str:
    """A belief-stories model's card: the same header and targets, accuracy by question kind."""
    a, ev = card["architecture"], card["eval"]

    def kinds(label: str) -> str:
        counts = ev[f"kinds{label}"]
        return ", ".join(f"{k} {ev[f'accuracy{label}_{k}']:.1%} ({counts[k]})" for k in counts if counts[k])

    lines = card_header(
        card,
        f"{a['n_layers']} layers, d_model {a['d_model']}, {a['n_heads']} heads × {a['d_head']}, gated MLP (SiLU) "
        f"d_mlp {a['d_mlp']}, {a['normalization_type']} norm, {a['positional_embedding_type']} positions",
        "belief stories",
        f"{ev['stories']} stories",
    ) + [
        f"| belief questions, two characters (as trained) | {ev['accuracy']:.1%}: {kinds('')}; a reader "
        f"that ignores who can see whom: {ev['visibility_blind']:.1%} |",
        f"| three characters (never trained on) | {ev['accuracy_three']:.1%}: {kinds('_three')}; the "
        f"visibility-blind reader: {ev['visibility_blind_three']:.1%} |",
    ]
    lines += checksums_and_targets(card)
    lines += ["", f"Used by lessons: {', '.join(card['lessons'])}.", ""]
    return "\n".join(lines)


def checksums_and_targets(card: dict) -> list[str]:
    """The end of every model card's table (its checksums), then its targets, met or not and why."""
    lines = [
        f"| weights sha256 | `{card['weights_sha256']}` |",
        f"| tokenizer sha256 | `{card['tokenizer_sha256']}` |",
        "",
        "## Targets",
        "",
        "| metric | target | measured | met |",
        "|---|---|---|---|",
    ]
    for m, t in card["targets"].items():
        met = "yes" if t["met"] else "**no**" + (f": {t['missed']}" if "missed" in t else "")
        lines.append(f"| {m} | {t['target']} | {t['value']:.4g} | {met} |")
    return lines


def _stage(stage: int) -> str:
    """A residual-stream stage in words: 0 is the embeddings, s is after layer s − 1."""
    return "at the embeddings" if stage == 0 else f"after layer {stage - 1}"


def circuit_markdown(c: dict, order: str) -> list[str]:
    """One order's part of the card's IOI-circuit section: the classified components and their numbers."""
    opening, ending = c["template"]
    first, second = ("S", "IO") if order == "subject first" else ("IO", "S")
    lines = [
        "",
        f"### {order.capitalize()}",
        "",
        f'Measured on {c["prompts"]} held-out transfer prompts of one template ("{opening} {first} and {second} '
        f'…{ending} S … to"), clean logit difference {c["clean_logit_diff"]:.2f}, {c["corrupted_logit_diff"]:.2f} '
        "with the two names exchanged. *direct*: direct attribution to the logit difference, as a share of the "
        "clean one; *patching*: normalised logit difference after patching the clean output into the exchanged "
        "run; *ablation*: share lost when the head alone is mean-ablated; attention from the final position.",
        "",
        "| component | class | direct | patching | ablation | attention on answer / subject / S2 |",
        "|---|---|---|---|---|---|",
    ]
    for k, classes in c["classes"].items():
        v = c["heads"].get(k) or c["mlps"][k]
        if "ablation" in v:
            rest = f"{v['ablation']:.2f} | {v['attn_answer']:.2f} / {v['attn_subject']:.2f} / {v['attn_s2']:.2f}"
        else:
            rest = "– | –"
        lines.append(f"| {k} | {', '.join(classes)} | {v['direct']:+.2f} | {v['patching']:+.2f} | {rest} |")
    return lines


def compare(name: str, fresh: dict, card: dict) -> list[tuple[str, float, float, float, bool]]:
    """(metric, card value, fresh value, tolerance, within) for every toleranced metric."""
    rows = []
    for m, tol in entry(name).tolerance.items():
        if m in card["eval"] and m in fresh:
            c, f = card["eval"][m], fresh[m]
            rows.append((m, c, f, tol, abs(c - f) <= tol))
    return rows


# ---------------------------------------------------------------------------------------
# The README's zoo table (generated from the cards: one source of truth)

TABLE_START = "<!-- zoo-table: generated by python -m utils.course.records -->"
TABLE_END = "<!-- /zoo-table -->"


def zoo_table() -> str:
    lines = [
        "| model | architecture | parameters | training | held-out loss | floor | gap | targets met |",
        "|---|---|---:|---|---:|---:|---:|---|",
    ]
    for name in zoo():
        c = read_card(name)
        a, tr, e = c["architecture"], c["training"], c["eval"]
        arch = f"{c['arch']}, {a['n_layers']}L, d_model {a['d_model']}, {a['n_heads']} heads"
        met = [m for m, t in c["targets"].items() if t["met"]]
        unmet = [m for m, t in c["targets"].items() if not t["met"]]
        targets = f"{len(met)}/{len(c['targets'])}" + (f" (not: {', '.join(unmet)})" if unmet else "")
        lines.append(
            f"| [{name}](data/models/{name}/README.md) | {arch} | {c['n_params']:,} | "
            f"{tr['tokens'] / 1e6:.1f}M tokens, {tr['seconds'] / 60:.0f} min | "
            f"{e['loss']:.3f} | {e['floor']:.3f} | {e['gap']:.3f} | {targets} |"
        )
    smollm2 = pretrained.card()  # measured by the course, trained elsewhere (utils.cards.pretrained_card)
    return "\n".join(lines + ([pretrained_row(smollm2)] if smollm2 else []))


def pretrained_row(c: dict) -> str:
    """The zoo table's row for a model trained elsewhere, from its card: its loss is per token of its
    own tokenizer, so per character too."""
    a, e = c["architecture"], c["eval"]
    return (
        f"| [{c['name']}](data/models/{c['name']}/README.md) | {c['arch']}, {a['n_layers']}L, d_model {a['d_model']}, "
        f"{a['n_heads']} heads | {c['n_params']:,} | pretrained elsewhere | {e['loss']:.3f} per token of its own "
        f"({e['loss_per_character']:.3f} per character) | {e['floor']:.3f} | {e['gap']:.3f} | – |"
    )


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m utils.cards.model_cards",
        description="Recompute model-card numbers on held-out Storyworld data.",
    )
    ap.add_argument("names", nargs="*", metavar="name", type=_zoo_name, help="zoo models (default: every built one)")
    ap.add_argument(
        "--seed",
        type=int,
        default=seeds.FRESH_EVAL,
        help="held-out Storyworld seed for the fresh measurement (default %(default)s)",
    )
    ap.add_argument("--docs", type=_positive, default=1000, help="documents to measure on")
    ap.add_argument(
        "--write-card",
        action="store_true",
        help="measure on the card's own held-out set and rewrite card.json/README.md",
    )
    args = ap.parse_args(argv)
    try:
        return _evaluate(args)
    except ZooError as e:
        print(f"python -m utils.cards.model_cards: error: {e}", file=sys.stderr)
        return 1


def _zoo_name(text: str) -> str:
    if text not in ZOO:
        raise argparse.ArgumentTypeError(f"{text!r} is not a zoo model; the zoo: {', '.join(ZOO)}")
    return text


def _evaluate(args) -> int:
    status = 0
    for name in args.names or zoo():
        if args.write_card:
            card = write_card(name)
            print(json.dumps(card["targets"], indent=1))
            continue
        card = read_card(name)
        fresh = measure(name, seed=args.seed, n_docs=args.docs)
        print(f"\n{name}: card (seed {card['eval']['seed']}) vs fresh (seed {args.seed}, {args.docs} docs)")
        print(f"  {'metric':28s} {'card':>9s} {'fresh':>9s} {'tol':>6s}")
        for m, c, f, tol, ok in compare(name, fresh, card):
            print(f"  {m:28s} {c:9.4f} {f:9.4f} {tol:6.2f} {'ok' if ok else 'DIFFERS'}")
            status |= not ok
        for m, t in check_targets(name, fresh).items():
            print(f"  target {m} {t['target']}: {t['value']:.4f} {'met' if t['met'] else 'NOT MET'}")
    return status


if __name__ == "__main__":
    sys.exit(main())
