"""What of the lookback mechanism does a belief-stories model show? Every candidate claim of
lesson 09, measured on a pilot model saved by ``beliefs_pilot.py --out``.

    .venv/bin/python benchmarks/experiments/beliefs_mechanism.py runs/beliefs-pilot [--seed 9201]

1. accuracy by question kind (two characters; three);
2. the payload: the answer's drink replaced at its drink token, layer by layer;
3. the pointer at ``A``: a story of the same shape with another cast, asking about another fill,
   patched in at ``A`` layer by layer: pointer (base's drink of the source's fill), payload (the
   source's own answer) or nothing;
4. visibility: the verb of a visibility sentence flipped, patched in at the verb and at every
   later position;
5. heads: attention from ``A`` to the answer's drink;
6. the pointer's subspace at its best layer: mean-difference, DAS and random, by rank.
"""

from __future__ import annotations

import argparse
import random
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import torch  # noqa: E402

from utils.corpora import beliefs as b  # noqa: E402
from utils.metrics import beliefs as m  # noqa: E402
from utils.model_zoo.models import load_model  # noqa: E402


def word_id(tok, word: str) -> int:
    return tok.convert_tokens_to_ids(word)


def pointer_pairs(stories, rng):
    """(base, source) pairs for moving the pointer (:func:`beliefs.pointer_twin`)."""
    return [(s, t) for s in stories if (t := b.pointer_twin(s, rng)) is not None]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("folder")
    ap.add_argument("--seed", type=int, default=9201)
    ap.add_argument("--n", type=int, default=600)
    args = ap.parse_args(argv)
    torch.manual_seed(0)
    model = load_model(args.folder)
    tok = b.load_tokenizer()
    L = model.cfg.n_layers
    layers = list(range(-1, L))

    # 1. behaviour
    for more in (False, True):
        stories = b.sample_stories(args.seed, 2000, more_characters=more)
        qs = m.questions(stories, tok)
        acc = m.accuracy_by_kind(m.correct(model, qs), stories)
        print(("three" if more else "two") + " characters: " + " ".join(f"{k} {v:.3f}" for k, v in acc.items()))

    stories = b.sample_stories(args.seed + 1, args.n)
    rng = random.Random(args.seed)

    # 2. payload at the answer's drink token
    known = [s for s in stories if b.answer_fill(s.plan) is not None]
    twins = []
    for s in known:
        f = b.answer_fill(s.plan)
        used = set(s.words)
        twins.append(b.with_drink(s, f, rng.choice([d for d in b.DRINKS if d not in used])))
    qb, qs_ = m.questions(known, tok), m.questions(twins, tok)
    pos = torch.tensor([s.annotations["fills"][b.answer_fill(s.plan)]["drink"] + 1 for s in known])
    row = []
    for layer in layers:
        logits = m.interchange(model, qb, qs_, m.resid_name(layer), pos)
        row.append(m.agreement(logits, qs_.answer))
    print("payload at the drink token, IIA by layer (emb, 0..):", " ".join(f"{x:.2f}" for x in row))
    # control: another fill's drink changed: the answer should stay
    ctrl_b, ctrl_s, ctrl_p = [], [], []
    for s in known:
        f = b.answer_fill(s.plan)
        others = [i for i in range(len(s.annotations["fills"])) if i != f]
        g = rng.choice(others)
        used = set(s.words)
        ctrl_b.append(s)
        ctrl_s.append(b.with_drink(s, g, rng.choice([d for d in b.DRINKS if d not in used])))
        ctrl_p.append(s.annotations["fills"][g]["drink"] + 1)
    cb, cs = m.questions(ctrl_b, tok), m.questions(ctrl_s, tok)
    row = [
        m.agreement(m.interchange(model, cb, cs, m.resid_name(layer), torch.tensor(ctrl_p)), cb.answer)
        for layer in layers
    ]
    print("control, another fill's drink changed: answer unchanged by layer:", " ".join(f"{x:.2f}" for x in row))

    # 2b. the question: the same story asking another question, patched position by position
    qpairs = [(s, t) for s in stories if (t := b.question_twin(s, rng)) is not None]
    qb, qs_ = m.questions([p[0] for p in qpairs], tok), m.questions([p[1] for p in qpairs], tok)
    print(f"question twins whose answer differs: {len(qpairs)}; IIA (the twin's answer) by layer:")
    for offset, label in ((-4, "Q"), (-3, "who"), (-2, "container"), (-1, "?"), (0, "A")):
        row = [
            m.agreement(m.interchange(model, qb, qs_, m.resid_name(layer), qb.at + offset), qs_.answer)
            for layer in layers
        ]
        print(f"  at {label:9s}", " ".join(f"{x:.2f}" for x in row))

    # 3. pointer at A
    pp = pointer_pairs(stories, rng)
    base = [p[0] for p in pp]
    source = [p[1] for p in pp]
    qb, qs_ = m.questions(base, tok), m.questions(source, tok)
    pointer = torch.tensor(
        [word_id(tok, s.words[s.annotations["fills"][b.answer_fill(c.plan)]["drink"]]) for s, c in pp]
    )
    for layer in layers:
        logits = m.interchange(model, qb, qs_, m.resid_name(layer), qb.at, qs_.at)
        print(
            f"pointer at A, layer {layer}: pointer {m.agreement(logits, pointer):.2f} "
            f"payload {m.agreement(logits, qs_.answer):.2f} nothing {m.agreement(logits, qb.answer):.2f}"
        )

    # 4. visibility
    vis_b, vis_s = [], []
    for s in stories:
        for k in range(len(s.annotations["visibility"])):
            t = b.with_visibility_flipped(s, k)
            if t.answer != s.answer:
                vis_b.append((s, k))
                vis_s.append(t)
                break
    vb = m.questions([x for x, _ in vis_b], tok)
    vs = m.questions(vis_s, tok)
    verb = torch.tensor([x.annotations["visibility"][k]["verb"] + 1 for x, k in vis_b])
    print(f"visibility pairs whose answer changes: {len(vis_b)}")
    for layer in layers:
        at_verb = m.agreement(m.interchange(model, vb, vs, m.resid_name(layer), verb), vs.answer)
        at_a = m.agreement(m.interchange(model, vb, vs, m.resid_name(layer), vb.at), vs.answer)
        print(f"visibility flipped, layer {layer}: at the verb {at_verb:.2f}, at A {at_a:.2f}")

    # 5. heads
    qk = m.questions(known, tok)
    att = m.attention_from_answer(model, qk)
    drink = torch.tensor([s.annotations["fills"][b.answer_fill(s.plan)]["drink"] + 1 for s in known])
    to_answer = att[torch.arange(len(known)), :, :, drink]  # [story, layer, head]
    print("attention from A to the answer's drink, by layer x head:")
    print(to_answer.mean(0))

    # 6. pointer subspace at the layer where the pointer IIA peaks
    best = max(
        layers,
        key=lambda layer: m.agreement(m.interchange(model, qb, qs_, m.resid_name(layer), qb.at, qs_.at), pointer),
    )
    half = len(pp) // 2
    train_b, test_b = m.questions(base[:half], tok), m.questions(base[half:], tok)
    train_s, test_s = m.questions(source[:half], tok), m.questions(source[half:], tok)
    name = m.resid_name(best)
    full = m.agreement(m.interchange(model, test_b, test_s, name, test_b.at, test_s.at), pointer[half:])
    x = m.activations(model, train_s, name)[torch.arange(half), train_s.at]
    labels = torch.tensor([b.answer_fill(c.plan) for c in source[:half]])
    print(f"pointer subspace at layer {best} (full interchange on held-out pairs: {full:.2f}):")
    for rank in (1, 2, 4, 8):
        md = m.mean_difference_basis(x, labels, min(rank, len(labels.unique()) - 1))
        das = m.fit_subspace(model, train_b, train_s, name, train_b.at, pointer[:half], rank, train_s.at, steps=150)
        rnd = m.random_basis(model.cfg.d_model, rank, seed=rank)
        res = [
            m.agreement(m.interchange(model, test_b, test_s, name, test_b.at, test_s.at, basis=basis), pointer[half:])
            for basis in (md, das, rnd)
        ]
        print(f"  rank {rank}: mean-difference {res[0]:.2f} DAS {res[1]:.2f} random {res[2]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
