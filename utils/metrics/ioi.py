"""Indirect-object identification on Storyworld's transfer documents.

"When Ann and Bob went to the park, Bob gave the kite to" -> " Ann": the *answer* is the
indirect object, the *distractor* the subject who gives. The metric is the logit of the
answer minus the logit of the distractor at the last token of the prompt.
"""

from __future__ import annotations

import torch

from utils.corpora import storyworld
from utils.corpora.tokenizer import EOT, load_tokenizer, word_id
from utils.metrics.common import device_of, forward_logits, right_padded


def ioi_prompts(docs: list[storyworld.Doc]) -> tuple[list[list[int]], torch.Tensor, torch.Tensor]:
    """Token ids ``[BOS] + prompt`` of every transfer document in ``docs``, with the answer's and
    the distractor's token ``[n_prompts]``."""
    tok = load_tokenizer()
    docs = [d for d in docs if d.family == "transfer"]
    eot = tok.convert_tokens_to_ids(EOT)
    prompts = [[eot] + tok(d.text[: d.annotations["prompt_end"]], add_special_tokens=False)["input_ids"] for d in docs]
    answers = torch.tensor([word_id(d.annotations["answer"], tok) for d in docs], dtype=torch.long)
    distractors = torch.tensor([word_id(d.annotations["distractor"], tok) for d in docs], dtype=torch.long)
    return prompts, answers, distractors


def ioi(model, docs: list[storyworld.Doc], batch: int = 64) -> dict:
    """Accuracy (share of prompts with answer logit > distractor logit) and mean logit difference."""
    prompts, answers, distractors = ioi_prompts(docs)
    eot = load_tokenizer().convert_tokens_to_ids(EOT)
    diffs = []
    for b in range(0, len(prompts), batch):
        group = prompts[b : b + batch]
        logits = forward_logits(model, right_padded(group, eot).to(device_of(model))).float().cpu()
        last = logits[torch.arange(len(group)), torch.tensor([len(p) - 1 for p in group])]
        ans, dis = answers[b : b + batch], distractors[b : b + batch]
        diffs.append(last.gather(1, ans[:, None])[:, 0] - last.gather(1, dis[:, None])[:, 0])
    d = torch.cat(diffs)
    return {"ioi_accuracy": (d > 0).float().mean().item(), "ioi_logit_diff": d.mean().item(), "ioi_prompts": len(d)}
