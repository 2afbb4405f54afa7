"""Measure the zoo: the numbers on every model card, recomputed on held-out Storyworld data.

    python -m utils.evaluate                      # check every card against a fresh measurement
    python -m utils.evaluate storyworld-4l --seed 9123 --docs 1000
    python -m utils.evaluate storyworld-4l --write-card   # (re)write card.json and README.md

Definitions (the cards and tests use exactly these):

* **loss**: mean NLL of predicting each document's text tokens and its EOS after a BOS.
* **entropy floor**: ``-Σ logprob / Σ tokens`` over the same documents and tokens, with
  each document's exact log-probability under the generator. **gap** = loss − floor.
* **IOI**: on ``transfer`` documents, the logit of the answer (indirect object) minus the
  logit of the distractor (subject) at the end of the prompt; accuracy = share > 0.
* **head scores** on repeated random tokens: ``BOS r r`` with ``r`` a run of distinct
  tokens drawn from Storyworld's content words (``content_word_pool``: 139 names, places,
  objects, emotions, ... but not function words such as " the"), its length (the period,
  10 to 60) drawn per sequence. The card also reports the best induction score when ``r``
  draws from every word token, function words included (``all_word_pool``).
  Previous-token score = mean attention from each position to the one before it;
  induction score = mean attention from each position of the second copy to the token
  after the same token's first occurrence. **repeat loss drop** = mean loss on the first
  copy minus mean loss on the second (the second copy's first token excluded).
* **emotion probe**: a 12-way linear probe (multinomial logistic regression) on the
  residual stream after each layer, labelled with the sentence subject's current emotion,
  trained on the word tokens (the subject's name and the predicate's words) of narrative
  sentences that do not name the emotion; accuracy on the same kind of tokens in separate
  documents, at the best layer. The card also gives the accuracy by token role and that of
  a probe fitted and tested on all tokens of those sentences, punctuation included.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import sys
import time
from functools import lru_cache
from pathlib import Path
from typing import Sequence

import torch
from tqdm.auto import tqdm

from utils import storyworld
from utils.models import MODELS, load_model, logits_of, read_card, sha256_file
from utils.tokenizer import EOT, encode_doc, load_tokenizer, token_spans, tokenizer_hash

EVAL_SEED = 9000          # held-out documents for loss, IOI
PROBE_TRAIN_SEED = 9001   # documents the emotion probe is fitted on
RANDOM_TOKENS_SEED = 9002
PROBE_TRAIN_DOCS = 1000   # narrative documents the emotion probe is fitted on

# What each model must show (DESIGN.md §5, issue 2). metric -> (comparison, threshold)
TARGETS = {
    "storyworld-attn2l": {"prev_token_score_layer0": (">=", 0.8),
                          "induction_score_layer1": (">=", 0.8),
                          "repeat_loss_drop": (">=", 3.0)},
    "storyworld-4l": {"gap": ("<=", 0.10), "ioi_accuracy": (">=", 0.95),
                      "ioi_logit_diff": (">=", 3.0), "induction_score": (">=", 0.7),
                      "emotion_probe_accuracy": (">=", 0.90)},
    "storyworld-llama": {"gap": ("<=", 0.15), "ioi_accuracy": (">=", 0.90)},
}
# How far a fresh measurement on other held-out documents may sit from the card.
TOLERANCE = {"loss": 0.03, "floor": 0.03, "gap": 0.02, "ioi_accuracy": 0.03,
             "ioi_logit_diff": 0.5, "prev_token_score_layer0": 0.05,
             "induction_score_layer1": 0.05, "induction_score": 0.05,
             "repeat_loss_drop": 0.4, "emotion_probe_accuracy": 0.04}


def _forward(model, tokens: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return logits_of(model, tokens)


def _right_padded(seqs: list[list[int]], fill: int) -> torch.Tensor:
    """Sequences of different lengths as one ``[batch, longest]`` tensor, padded at the end.

    Causal attention means the padding never affects the real positions before it.
    """
    x = torch.full((len(seqs), max(map(len, seqs))), fill)
    for r, s in enumerate(seqs):
        x[r, :len(s)] = torch.tensor(s)
    return x


def _device(model) -> torch.device:
    return next(model.parameters()).device


# ---------------------------------------------------------------------------------------
# Loss and floor


def heldout_loss(model, docs: list[storyworld.Doc], batch: int = 64) -> dict:
    """Mean NLL per token over ``docs`` and the generator's entropy floor on the same tokens."""
    tok = load_tokenizer()
    seqs = [encode_doc(d.text, tok) for d in docs]
    eot = seqs[0][0]
    count = 0
    doc_nll = [0.0] * len(seqs)
    order = sorted(range(len(seqs)), key=lambda i: len(seqs[i]))  # less padding
    for b in range(0, len(order), batch):
        group = [seqs[i] for i in order[b:b + batch]]
        x = _right_padded(group, eot)
        mask = torch.zeros(len(group), x.shape[1] - 1, dtype=torch.bool)
        for r, s in enumerate(group):
            mask[r, :len(s) - 1] = True
        x = x.to(_device(model))
        logits = _forward(model, x[:, :-1]).float()
        lp = torch.log_softmax(logits, -1).gather(-1, x[:, 1:, None])[..., 0].cpu()
        count += int(mask.sum())
        for r, i in enumerate(order[b:b + batch]):
            doc_nll[i] = -lp[r][mask[r]].sum().item()
    nll = math.fsum(doc_nll)
    floor = -math.fsum(d.logprob for d in docs) / count
    gap = nll / count - floor
    # Standard error of the gap (a ratio of sums over documents), by the delta method.
    excess = [doc_nll[i] + d.logprob - gap * (len(seqs[i]) - 1) for i, d in enumerate(docs)]
    gap_se = math.sqrt(math.fsum(e * e for e in excess)) / count
    return {"loss": nll / count, "floor": floor, "gap": gap, "gap_se": gap_se, "tokens": count}


def song_copy_loss(model, docs: list[storyworld.Doc]) -> dict:
    """Mean NLL on the words of each held-out song's first copy and of its second copy.

    The in-distribution twin of the repeated-random-token test. The first word of each copy
    is left out: the first is predicted from BOS alone and the repeat's first word is the
    song's stopping decision, not something to copy.
    """
    tok = load_tokenizer()
    first, second = [], []
    for d in docs:
        if d.family != "song":
            continue
        rep = d.annotations["repeats"][0]
        spans = token_spans(d.text, tok)
        ids = encode_doc(d.text, tok)
        lp = torch.log_softmax(_forward(model, torch.tensor([ids[:-1]], device=_device(model))).float()[0], -1).cpu()
        nll = -lp.gather(-1, torch.tensor(ids[1:])[:, None])[:, 0]  # nll[i] predicts token i
        words = [i for i, (a, b) in enumerate(spans) if any(ch.isalnum() for ch in d.text[a:b])]
        in_first = [i for i in words if rep["first"][0] <= spans[i][0] < rep["first"][1]]
        in_second = [i for i in words if spans[i][0] >= rep["repeat"][0] - 1]
        first += nll[in_first[1:]].tolist()
        second += nll[in_second[1:]].tolist()
    return {"song_loss_first_copy": sum(first) / len(first), "song_loss_second_copy": sum(second) / len(second),
            "song_tokens": len(first) + len(second)}


# ---------------------------------------------------------------------------------------
# Indirect-object identification


def ioi(model, docs: list[storyworld.Doc], batch: int = 64) -> dict:
    """Logit difference answer − distractor at the end of each transfer prompt."""
    tok = load_tokenizer()
    docs = [d for d in docs if d.family == "transfer"]
    eot = tok.convert_tokens_to_ids(EOT)
    diffs = []
    for b in range(0, len(docs), batch):
        group = docs[b:b + batch]
        prompts = [[eot] + tok(d.text[:d.annotations["prompt_end"]], add_special_tokens=False)["input_ids"]
                   for d in group]
        logits = _forward(model, _right_padded(prompts, eot).to(_device(model))).float().cpu()
        last = logits[torch.arange(len(group)), torch.tensor([len(p) - 1 for p in prompts])]
        ans = torch.tensor([_word_id(tok, d.annotations["answer"]) for d in group])
        dis = torch.tensor([_word_id(tok, d.annotations["distractor"]) for d in group])
        diffs.append(last.gather(1, ans[:, None])[:, 0] - last.gather(1, dis[:, None])[:, 0])
    d = torch.cat(diffs)
    return {"ioi_accuracy": (d > 0).float().mean().item(), "ioi_logit_diff": d.mean().item(),
            "ioi_prompts": len(d)}


def _word_id(tok, word: str) -> int:
    ids = tok(" " + word, add_special_tokens=False)["input_ids"]
    assert len(ids) == 1, f"{word!r} is not one token"
    return ids[0]


# ---------------------------------------------------------------------------------------
# Heads on repeated random tokens


def content_word_pool() -> list[int]:
    """Storyworld's content words as tokens: names, places, objects, emotions, list and
    rhyme words, behaviours and manners (``storyworld.SONG_WORDS``, each one token with its
    leading space). Random sequences for the head scores draw from this pool, as lesson 01
    does."""
    tok = load_tokenizer()
    return sorted(_word_id(tok, w) for w in storyworld.SONG_WORDS)


@lru_cache(maxsize=None)
def all_word_pool(n_docs: int = 2000) -> tuple[int, ...]:
    """Every word token Storyworld text uses (a space, then letters), function words such
    as " the", " felt" and " said" included. Those only ever appear in fixed grammatical
    slots, so a model trained on Storyworld need not copy them in context; the cards report
    the induction score on this wider pool too. Cached: every ``measure`` call uses it."""
    tok = load_tokenizer()
    ids = set()
    for d in storyworld.sample_docs(EVAL_SEED, n_docs):
        ids.update(tok(d.text, add_special_tokens=False)["input_ids"])
    vocab = tok.convert_ids_to_tokens(sorted(ids))
    return tuple(i for i, s in zip(sorted(ids), vocab) if s.startswith("Ġ") and s[1:].isalpha())


def repeated_random_tokens(n: int, seed: int = RANDOM_TOKENS_SEED, min_period: int = 10,
                           max_period: int = 60, pool: Sequence[int] | None = None,
                           song_like: bool = False) -> list[tuple[list[int], int]]:
    """``n`` sequences ``[BOS] + r + r`` with ``r`` distinct random tokens from ``pool``
    (default: ``content_word_pool()``); returns (ids, period) pairs.

    The pool's words carry a leading space, and no Storyworld document starts with one.
    ``song_like=True`` writes the very first word without its space, as a Storyworld song
    begins (the repeat keeps the space, as in a song), with the same words and periods.
    """
    rng = random.Random(seed)
    pool = pool if pool is not None else content_word_pool()
    tok = load_tokenizer()
    eot = tok.convert_tokens_to_ids(EOT)
    out = []
    for _ in range(n):
        period = rng.randint(min_period, max_period)
        r = rng.sample(pool, period)
        start = [tok.convert_tokens_to_ids(tok.convert_ids_to_tokens(r[0]).lstrip("Ġ"))] if song_like else r[:1]
        out.append(([eot] + start + r[1:] + r, period))
    return out


def head_scores(model, seqs: list[tuple[list[int], int]]) -> dict:
    """Previous-token and induction scores per head ``[n_layers, n_heads]`` and the loss drop."""
    L, H = model.cfg.n_layers, model.cfg.n_heads
    prev = torch.zeros(L, H)
    ind = torch.zeros(L, H)
    first, second = [], []
    names = [f"blocks.{l}.attn.hook_pattern" for l in range(L)]
    for ids, period in seqs:
        x = torch.tensor([ids], device=_device(model))
        with torch.no_grad():
            logits, cache = model.run_with_cache(x, names_filter=lambda n: n in names)
        lp = torch.log_softmax(logits[0].float(), -1)
        nll = -lp[:-1].gather(-1, x[0, 1:, None])[:, 0].cpu()
        # nll[i] is the loss of predicting token i+1. First copy: tokens 1..P; second: P+2..2P.
        first.append(nll[0:period].mean())
        second.append(nll[period + 1:2 * period].mean())
        pos = torch.arange(2, 2 * period + 1)          # queries (skip BOS and the first token)
        q2 = torch.arange(period + 1, 2 * period + 1)  # queries in the second copy
        for l in range(L):
            pat = cache[names[l]][0].float().cpu()    # [head, query, key]
            prev[l] += pat[:, pos, pos - 1].mean(-1)
            ind[l] += pat[:, q2, q2 - period + 1].mean(-1)
    n = len(seqs)
    return {"prev_token_scores": (prev / n).tolist(), "induction_scores": (ind / n).tolist(),
            "loss_first_copy": torch.stack(first).mean().item(),
            "loss_second_copy": torch.stack(second).mean().item(),
            "repeat_loss_drop": (torch.stack(first) - torch.stack(second)).mean().item()}


# ---------------------------------------------------------------------------------------
# Emotion probe


PROBE_ROLES = ("subject", "predicate", "punctuation")


def emotion_dataset(model, docs: list[storyworld.Doc]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, int]:
    """Residual stream after every layer at every token of the narrative sentences that do
    not name the emotion, labelled with the subject's current emotion.

    Returns activations ``[n_layers, n_tokens, d_model]``, labels ``[n_tokens]``, each
    token's role ``[n_tokens]`` (an index into ``PROBE_ROLES``: the subject's name, a word
    of the predicate, or punctuation), the size of its story's cast ``[n_tokens]`` (1 or 2
    characters), and the number of sentences they come from.
    """
    tok = load_tokenizer()
    L = model.cfg.n_layers
    names = [f"blocks.{l}.hook_resid_post" for l in range(L)]
    acts, labels, roles, casts, n_sentences = [[] for _ in range(L)], [], [], [], 0
    for d in docs:
        if d.family != "narrative":
            continue
        spans = token_spans(d.text, tok)
        rows, ys = [], []
        for s in d.annotations["sentences"]:
            if s["names_emotion"] or "emotion" not in s:
                continue
            subject_end = s["span"][0] + len(s["subject"])
            n_sentences += 1
            for i, (a, b) in enumerate(spans):
                if a < s["span"][1] and b > s["span"][0]:
                    rows.append(i + 1)  # +1 for BOS
                    ys.append(storyworld.EMOTIONS.index(s["emotion"]))
                    word = any(ch.isalnum() for ch in d.text[a:b])
                    roles.append(0 if b <= subject_end else (1 if word else 2))
                    casts.append(len(d.annotations["characters"]))
        if not rows:
            continue
        x = torch.tensor([encode_doc(d.text, tok)[:-1]], device=_device(model))
        with torch.no_grad():
            _, cache = model.run_with_cache(x, names_filter=lambda n: n in names)
        for l in range(L):
            acts[l].append(cache[names[l]][0, rows].float().cpu())
        labels += ys
    return (torch.stack([torch.cat(a) for a in acts]), torch.tensor(labels), torch.tensor(roles),
            torch.tensor(casts), n_sentences)


def fit_probe(x: torch.Tensor, y: torch.Tensor, n_classes: int, l2: float = 1e-3,
              steps: int = 200) -> torch.nn.Linear:
    """Multinomial logistic regression on standardised features, fitted with L-BFGS."""
    torch.manual_seed(0)
    mu, sd = x.mean(0), x.std(0) + 1e-6
    probe = torch.nn.Linear(x.shape[1], n_classes)
    opt = torch.optim.LBFGS(probe.parameters(), lr=1, max_iter=steps, line_search_fn="strong_wolfe")
    z = (x - mu) / sd

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(probe(z), y) + l2 * probe.weight.pow(2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    with torch.no_grad():  # fold the standardisation into the weights
        probe.weight /= sd
        probe.bias -= probe.weight @ mu
    return probe


def emotion_probe(model, train_docs, test_docs) -> dict:
    """Fit a probe per layer on the word tokens (the subject's name and the predicate's
    words) of ``train_docs``; report its accuracy on the word tokens of ``test_docs``, by
    layer and by role. A second probe per layer, fitted and tested on all tokens
    punctuation included, gives ``emotion_probe_accuracy_all_tokens``."""
    xtr, ytr, rtr, _, _ = emotion_dataset(model, train_docs)
    xte, yte, rte, cte, n_test_sentences = emotion_dataset(model, test_docs)
    word_tr, word_te = rtr != PROBE_ROLES.index("punctuation"), rte != PROBE_ROLES.index("punctuation")
    accs, accs_all, hits = [], [], []
    for l in range(xtr.shape[0]):
        probe = fit_probe(xtr[l][word_tr], ytr[word_tr], len(storyworld.EMOTIONS))
        with torch.no_grad():
            hit = probe(xte[l]).argmax(-1) == yte
        hits.append(hit)
        accs.append(hit[word_te].float().mean().item())
        probe_all = fit_probe(xtr[l], ytr, len(storyworld.EMOTIONS))
        with torch.no_grad():
            accs_all.append((probe_all(xte[l]).argmax(-1) == yte).float().mean().item())
    best = max(range(len(accs)), key=accs.__getitem__)
    by_role = {r: hits[best][rte == i].float().mean().item() for i, r in enumerate(PROBE_ROLES)}
    # Two-character stories need binding: which character feels what.
    by_cast = {f"{r} ({n} character{'s' if n > 1 else ''})": hits[best][(rte == i) & (cte == n)].float().mean().item()
               for n in (1, 2) for i, r in enumerate(PROBE_ROLES[:2])}
    return {"emotion_probe_accuracy": accs[best], "emotion_probe_layer": best,
            "emotion_probe_accuracy_by_layer": accs, "emotion_probe_accuracy_by_role": by_role,
            "emotion_probe_accuracy_by_cast": by_cast,
            "emotion_probe_accuracy_all_tokens": max(accs_all),
            "emotion_probe_train_tokens": int(word_tr.sum()), "emotion_probe_test_tokens": int(word_te.sum()),
            "emotion_probe_test_sentences": n_test_sentences}


# ---------------------------------------------------------------------------------------
# Per-model measurement, cards


def measure(name: str, model=None, seed: int = EVAL_SEED, n_docs: int = 2000,
            n_random: int = 100, progress: bool = True) -> dict:
    """Every number the card of ``name`` reports, measured on held-out data from ``seed``."""
    model = model if model is not None else load_model(name)
    steps = ["loss", "heads", "ioi", "probe"]
    bar = tqdm(steps, desc=f"measuring {name}", disable=not progress, leave=False)
    out: dict = {"seed": seed, "docs": n_docs}
    docs = storyworld.sample_docs(seed, n_docs)
    for step in bar:
        bar.set_postfix_str(step)
        if step == "loss":
            out.update(heldout_loss(model, docs))
            out.update(song_copy_loss(model, docs))
        elif step == "heads":
            rseed = seed + 2 if seed != EVAL_SEED else RANDOM_TOKENS_SEED
            h = head_scores(model, repeated_random_tokens(n_random, seed=rseed))
            out.update(h)
            wide = head_scores(model, repeated_random_tokens(n_random // 2, seed=rseed, pool=all_word_pool()))
            out["induction_score_all_words"] = max(max(row) for row in wide["induction_scores"])
            out["repeat_loss_drop_all_words"] = wide["repeat_loss_drop"]
            song = head_scores(model, repeated_random_tokens(n_random, seed=rseed, song_like=True))
            out["induction_score_song_like"] = max(max(row) for row in song["induction_scores"])
            out.update({f"{k}_song_like": song[k] for k in ("loss_first_copy", "loss_second_copy", "repeat_loss_drop")})
            prev, ind = torch.tensor(h["prev_token_scores"]), torch.tensor(h["induction_scores"])
            out["prev_token_score_layer0"] = prev[0].max().item()
            flat = int(prev.argmax())
            out["prev_token_head"] = [flat // prev.shape[1], flat % prev.shape[1]]
            out["prev_token_score"] = prev.max().item()
            if prev.shape[0] > 1:
                i1 = int(ind[1].argmax())
                out["induction_head_layer1"] = [1, i1]
                out["induction_score_layer1"] = ind[1, i1].item()
            flat = int(ind.argmax())
            out["induction_head"] = [flat // ind.shape[1], flat % ind.shape[1]]
            out["induction_score"] = ind.max().item()
        elif step == "ioi":
            out.update(ioi(model, docs))
        elif step == "probe" and name != "storyworld-attn2l":
            # The probe's own training set has a fixed size, whatever the evaluation sample.
            probe_train = storyworld.sample_docs(PROBE_TRAIN_SEED if seed == EVAL_SEED else seed + 1,
                                                 PROBE_TRAIN_DOCS, "narrative")
            test = [d for d in docs if d.family == "narrative"][:max(200, n_docs // 4)]
            out.update(emotion_probe(model, probe_train, test))
    return out


def check_targets(name: str, metrics: dict) -> dict:
    """{metric: {"target": "<= 0.1", "value": v, "met": bool}} for the model's targets."""
    res = {}
    for metric, (op, thr) in TARGETS.get(name, {}).items():
        v = metrics.get(metric)
        met = v is not None and (v >= thr if op == ">=" else v <= thr)
        res[metric] = {"target": f"{op} {thr}", "value": v, "met": bool(met)}
    return res


def architecture(model) -> dict:
    c = model.cfg
    keys = ["n_layers", "d_model", "n_heads", "d_head", "d_mlp", "n_ctx", "d_vocab",
            "normalization_type", "positional_embedding_type", "act_fn", "attn_only",
            "gated_mlp", "n_key_value_heads", "original_architecture"]
    return {k: getattr(c, k, None) for k in keys}


def write_card(name: str, model_dir: Path | None = None) -> dict:
    """Measure ``name`` and write ``card.json`` and ``README.md`` into its directory."""
    folder = Path(model_dir or MODELS / name)
    training = json.loads((folder / "training.json").read_text())
    card = {"name": name, "format": training["format"], "arch": training["arch"],
            "weights_sha256": sha256_file(folder / "model.safetensors"),
            "tokenizer_sha256": tokenizer_hash()}
    (folder / "card.json").write_text(json.dumps(card, indent=1))  # so load_model verifies
    model = load_model(name)
    t = time.time()
    metrics = measure(name, model)
    card.update(
        architecture=architecture(model), n_params=training["n_params"],
        n_params_without_embeddings=training["n_params"] - _embedding_params(model),
        training=training["training"], used_by=training["used_by"],
        eval=metrics, eval_seconds=round(time.time() - t, 1),
        targets=check_targets(name, metrics),
    )
    (folder / "card.json").write_text(json.dumps(card, indent=1))
    (folder / "README.md").write_text(card_markdown(card))
    return card


def _embedding_params(model) -> int:
    c = model.cfg
    pos = c.n_ctx * c.d_model if c.positional_embedding_type == "standard" else 0
    return 2 * c.d_vocab * c.d_model + pos


def card_markdown(card: dict) -> str:
    a, tr, ev = card["architecture"], card["training"], card["eval"]
    lines = [
        f"# {card['name']}", "",
        "Generated by `python -m utils.evaluate " + card["name"] + " --write-card` from `card.json`; "
        "do not edit by hand.", "",
        "| | |", "|---|---|",
        f"| architecture | {card['arch']} ({card['format']} checkpoint), {a['n_layers']} layers, "
        f"d_model {a['d_model']}, {a['n_heads']} heads × {a['d_head']}"
        + (f", d_mlp {a['d_mlp']}" if not a.get("attn_only") else ", attention only") + " |",
        f"| parameters | {card['n_params']:,} ({card['n_params_without_embeddings']:,} without embeddings) |",
        f"| training | {tr['tokens']:,} tokens, {tr['steps']} steps of {tr['batch']}×{tr['n_ctx']}, "
        f"lr {tr['lr']}, seed {tr['seed']}, Storyworld seed {tr['data_seed']} |",
        f"| training time | {tr['seconds'] / 60:.1f} min on {tr['device']}, "
        f"{'bf16 autocast' if tr['precision'] == 'bf16' else 'float32'} |",
        f"| held-out loss | {ev['loss']:.4f} nats/token (Storyworld seed {ev['seed']}, {ev['docs']} docs, {ev['tokens']:,} tokens) |",
        f"| entropy floor | {ev['floor']:.4f} nats/token; gap {ev['gap']:.4f} |",
        f"| IOI | accuracy {ev['ioi_accuracy']:.1%}, mean logit difference {ev['ioi_logit_diff']:.2f} ({ev['ioi_prompts']} prompts) |",
        f"| previous-token head | L{ev['prev_token_head'][0]}H{ev['prev_token_head'][1]}, score "
        f"{ev['prev_token_score']:.3f} (best in layer 0: {ev['prev_token_score_layer0']:.3f}) |",
        f"| induction head | L{ev['induction_head'][0]}H{ev['induction_head'][1]}, score {ev['induction_score']:.3f} |",
        f"| repeated random tokens (content words) | loss {ev['loss_first_copy']:.2f} → {ev['loss_second_copy']:.2f} (drop {ev['repeat_loss_drop']:.2f}) |",
        f"| same, drawn from all words incl. function words | best induction score {ev['induction_score_all_words']:.3f}, loss drop {ev['repeat_loss_drop_all_words']:.2f} |",
        f"| same, first word unspaced as at the start of a song | induction score {ev['induction_score_song_like']:.3f}, "
        f"loss {ev['loss_first_copy_song_like']:.2f} → {ev['loss_second_copy_song_like']:.2f} "
        f"(drop {ev['repeat_loss_drop_song_like']:.2f}) |",
        f"| Storyworld songs (held out) | loss on the first copy {ev['song_loss_first_copy']:.2f} → second copy "
        f"{ev['song_loss_second_copy']:.2f}; a uniform guess over the {len(storyworld.SONG_WORDS)} song words costs "
        f"{math.log(len(storyworld.SONG_WORDS)):.2f} |",
    ]
    if "emotion_probe_accuracy" in ev:
        roles = ev.get("emotion_probe_accuracy_by_role", {})
        lines.append(f"| emotion probe (12-way, unnamed) | {ev['emotion_probe_accuracy']:.1%} after layer "
                     f"{ev['emotion_probe_layer']} on the {ev['emotion_probe_test_tokens']:,} word tokens "
                     "(subject and predicate) of sentences that do not name the emotion"
                     + (" (subject " + ", predicate ".join(f"{roles[r]:.1%}" for r in ("subject", "predicate"))
                        + f"); on all their tokens, punctuation included: {ev['emotion_probe_accuracy_all_tokens']:.1%}"
                        if roles else "") + " |")
        lines.append("| emotion probe by story | " + ", ".join(
            f"{k} {v:.1%}" for k, v in ev["emotion_probe_accuracy_by_cast"].items()) + " |")
    lines += [f"| weights sha256 | `{card['weights_sha256']}` |",
              f"| tokenizer sha256 | `{card['tokenizer_sha256']}` |", "", "## Targets", "",
              "| metric | target | measured | met |", "|---|---|---|---|"]
    for m, t in card["targets"].items():
        lines.append(f"| {m} | {t['target']} | {t['value']:.4g} | {'yes' if t['met'] else '**no**'} |")
    lines += ["", f"Used by lessons: {', '.join(card['used_by'])}.", ""]
    return "\n".join(lines)


def compare(name: str, fresh: dict, card: dict) -> list[tuple[str, float, float, float, bool]]:
    """(metric, card value, fresh value, tolerance, within) for every toleranced metric."""
    rows = []
    for m, tol in TOLERANCE.items():
        if m in card["eval"] and m in fresh:
            c, f = card["eval"][m], fresh[m]
            rows.append((m, c, f, tol, abs(c - f) <= tol))
    return rows


def main(argv=None) -> int:
    from utils.models import zoo

    ap = argparse.ArgumentParser(prog="python -m utils.evaluate",
                                 description="Recompute model-card numbers on held-out Storyworld data.")
    ap.add_argument("names", nargs="*", help="zoo models (default: every built one)")
    ap.add_argument("--seed", type=int, default=EVAL_SEED + 100,
                    help="held-out Storyworld seed for the fresh measurement (default %(default)s)")
    ap.add_argument("--docs", type=int, default=1000, help="documents to measure on")
    ap.add_argument("--write-card", action="store_true",
                    help="measure on the card's own held-out set and rewrite card.json/README.md")
    ap.add_argument("--readme", action="store_true", help="regenerate the zoo table in README.md")
    args = ap.parse_args(argv)
    if args.readme:
        README.write_text(readme_with_table(README.read_text()))
        return 0
    names = args.names or zoo()
    status = 0
    for name in names:
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



# ---------------------------------------------------------------------------------------
# The README's zoo table (generated from the cards: one source of truth)

README = Path(__file__).resolve().parent.parent / "README.md"
TABLE_START, TABLE_END = "<!-- zoo-table: generated by python -m utils.evaluate --readme -->", "<!-- /zoo-table -->"


def zoo_table() -> str:
    from utils.models import zoo

    lines = ["| model | architecture | parameters | training | held-out loss | floor | gap | targets met |",
             "|---|---|---:|---|---:|---:|---:|---|"]
    for name in zoo():
        c = read_card(name)
        a, tr, e = c["architecture"], c["training"], c["eval"]
        arch = (f"{c['arch']}, {a['n_layers']}L, d_model {a['d_model']}, {a['n_heads']} heads")
        met = [m for m, t in c["targets"].items() if t["met"]]
        unmet = [m for m, t in c["targets"].items() if not t["met"]]
        targets = f"{len(met)}/{len(c['targets'])}" + (f" (not: {', '.join(unmet)})" if unmet else "")
        lines.append(f"| [{name}](data/models/{name}/README.md) | {arch} | {c['n_params']:,} | "
                     f"{tr['tokens'] / 1e6:.1f}M tokens, {tr['seconds'] / 60:.0f} min | "
                     f"{e['loss']:.3f} | {e['floor']:.3f} | {e['gap']:.3f} | {targets} |")
    return "\n".join(lines)


def splice(text: str, start: str, end: str, body: str) -> str:
    """``text`` with whatever lies between the ``start`` and ``end`` markers replaced by ``body``."""
    head, rest = text.split(start)
    _, tail = rest.split(end)
    return f"{head}{start}\n{body}\n{end}{tail}"


def readme_with_table(text: str) -> str:
    return splice(text, TABLE_START, TABLE_END, zoo_table())


if __name__ == "__main__":
    sys.exit(main())
