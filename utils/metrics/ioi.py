"""Indirect-object identification on Storyworld's transfer documents.

"When Ann and Bob went to the park, Bob gave the kite to" -> " Ann": the *answer* is the
indirect object, the *distractor* the subject who gives. The metric is the logit of the
answer minus the logit of the distractor at the last token of the prompt.

Prompts are tokenized by the model's own tokenizer. Every Storyworld name is one token in the
course tokenizer; a tokenizer trained on other text may cut a rare name in pieces (SmolLM2's
keeps 17 of the 24 whole), and a name in pieces has no single logit to read, so the documents
with such a name are left out and the result says how many.
"""

from __future__ import annotations

import torch

from utils.corpora import storyworld
from utils.corpora.tokenizer import document_ends, load_tokenizer, word_id
from utils.metrics.common import (
    LOGITS_PER_BATCH,
    device_of,
    forward_logits,
    right_padded,
    tokenizer_of,
    vocabulary_size,
)


def ioi_prompts(docs: list[storyworld.Doc], tokenizer=None) -> tuple[list[list[int]], torch.Tensor, torch.Tensor]:
    """Token ids ``[BOS] + prompt`` of every transfer document in ``docs`` whose answer and
    distractor are each one token of ``tokenizer`` (default the course's, where all are), with the
    answer's and the distractor's token ``[n_prompts]``. Refuses, in one sentence, transfer
    documents none of which has two single-token names."""
    tok = tokenizer or load_tokenizer()
    bos = document_ends(tok)[0]
    transfer = [d for d in docs if d.family == "transfer"]
    prompts, answers, distractors = [], [], []
    for d in transfer:
        try:
            a, b = word_id(d.annotations["answer"], tok), word_id(d.annotations["distractor"], tok)
        except ValueError:  # a name in pieces
            continue
        prompts.append([bos] + tok(d.text[: d.annotations["prompt_end"]], add_special_tokens=False)["input_ids"])
        answers.append(a)
        distractors.append(b)
    if transfer and not prompts:
        raise ValueError(
            f"none of the {len(transfer)} transfer documents has two names that are single tokens of this "
            "tokenizer, so no logit difference between them can be read"
        )
    return prompts, torch.tensor(answers, dtype=torch.long), torch.tensor(distractors, dtype=torch.long)


def ioi(model, docs: list[storyworld.Doc], batch: int = 64) -> dict:
    """Accuracy (share of prompts with answer logit > distractor logit) and mean logit difference,
    on the transfer documents of ``docs`` whose two names are single tokens of the model's tokenizer
    (``ioi_prompts`` of them; ``ioi_left_out`` had a name in pieces)."""
    tok = tokenizer_of(model)
    prompts, answers, distractors = ioi_prompts(docs, tok)
    if not prompts:
        raise ValueError("there is no transfer document among these documents: IOI needs some")
    bos = document_ends(tok)[0]
    longest = max(map(len, prompts)) * (vocabulary_size(model) or len(tok))
    batch = max(1, min(batch, LOGITS_PER_BATCH // longest))  # fewer prompts at a time for a large vocabulary
    diffs = []
    for b in range(0, len(prompts), batch):
        group = prompts[b : b + batch]
        logits = forward_logits(model, right_padded(group, bos).to(device_of(model))).float().cpu()
        last = logits[torch.arange(len(group)), torch.tensor([len(p) - 1 for p in group])]
        ans, dis = answers[b : b + batch], distractors[b : b + batch]
        diffs.append(last.gather(1, ans[:, None])[:, 0] - last.gather(1, dis[:, None])[:, 0])
    d = torch.cat(diffs)
    left_out = sum(doc.family == "transfer" for doc in docs) - len(d)
    return {
        "ioi_accuracy": (d > 0).float().mean().item(),
        "ioi_logit_diff": d.mean().item(),
        "ioi_prompts": len(d),
        "ioi_left_out": left_out,
    }
