"""A quick look at a belief model's mechanism (a few minutes on one thread): the pointer interchange at A
layer by layer, the same story's other question patched at A, the payload patched position by position,
attention from A to the answer's drink.

    .venv/bin/python benchmarks/experiments/beliefs_preview.py <model folder>
"""

from __future__ import annotations

import random
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import torch  # noqa: E402

from utils.corpora import beliefs as b  # noqa: E402
from utils.metrics import beliefs as m  # noqa: E402
from utils.model_zoo.models import load_model  # noqa: E402


def main() -> int:
    torch.set_num_threads(1)
    model = load_model(sys.argv[1])
    tok = b.load_tokenizer()
    layers = list(range(-1, model.cfg.n_layers))
    stories = b.sample_stories(9201, 400)
    rng = random.Random(0)

    pairs = [(s, t) for s in stories if (t := b.pointer_twin(s, rng)) is not None][:200]
    qb, qs = m.questions([p[0] for p in pairs], tok), m.questions([p[1] for p in pairs], tok)
    drinks = [s.words[s.annotations["fills"][b.answer_fill(t.plan)]["drink"]] for s, t in pairs]
    pointer = torch.tensor(tok.convert_tokens_to_ids(drinks))
    for layer in layers:
        logits = m.interchange(model, qb, qs, m.resid_name(layer), qb.at, qs.at)
        print(
            f"pointer at A after {layer}: pointer {m.agreement(logits, pointer):.2f} "
            f"payload {m.agreement(logits, qs.answer):.2f} nothing {m.agreement(logits, qb.answer):.2f}",
            flush=True,
        )

    # the same story asking another question whose answer differs: patched at A, by layer
    twins_q = [(s, t) for s in stories if (t := b.question_twin(s, rng)) is not None]
    twins_q = twins_q[:200]
    qb, qs = m.questions([p[0] for p in twins_q], tok), m.questions([p[1] for p in twins_q], tok)
    for layer in layers:
        logits = m.interchange(model, qb, qs, m.resid_name(layer), qb.at, qs.at)
        print(
            f"question twin at A after {layer}: the twin's answer {m.agreement(logits, qs.answer):.2f} "
            f"the base's {m.agreement(logits, qb.answer):.2f}",
            flush=True,
        )

    known = [s for s in stories if b.answer_fill(s.plan) is not None][:200]
    twins = [
        b.with_drink(s, b.answer_fill(s.plan), rng.choice([d for d in b.DRINKS if d not in s.words])) for s in known
    ]
    qk, qt = m.questions(known, tok), m.questions(twins, tok)
    fill = [s.annotations["fills"][b.answer_fill(s.plan)] for s in known]
    roles = {
        "drink": torch.tensor([f["drink"] + 1 for f in fill]),
        "end": torch.tensor([f["end"] + 1 for f in fill]),
        "q char": torch.tensor([s.annotations["question"]["character"] + 1 for s in known]),
        "q cont": torch.tensor([s.annotations["question"]["container"] + 1 for s in known]),
        "?": qk.at - 1,
        "A": qk.at,
    }
    sweep = m.interchange_sweep(model, qk, qt, roles, layers, qt.answer)
    for role, row in zip(roles, sweep):
        print(f"payload {role:7s}", " ".join(f"{x:.2f}" for x in row), flush=True)
    att = m.attention_from_answer(model, qk)
    print("attention A -> answer drink, layer x head\n", att[torch.arange(len(known)), :, :, roles["drink"]].mean(0))
    return 0


if __name__ == "__main__":
    sys.exit(main())
