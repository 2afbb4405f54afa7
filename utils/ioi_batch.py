"""A batch of indirect-object prompts from Storyworld's transfer documents, tokenized by any model.

"When Ann and Bob went to the park, Bob gave the kite to" -> " Ann": the *answer* is the
indirect object, the *distractor* the subject who gives (named twice in the prompt). The
prompts differ in length, so the batch is right-padded and ``last`` says where each ends.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from utils import storyworld


@dataclass
class TransferBatch:
    tokens: torch.Tensor  # [batch, position]: BOS + prompt, right-padded with BOS
    last: torch.Tensor  # [batch]: the position of each prompt's final token (" to")
    answers: torch.Tensor  # [batch]: the token id of the answer (indirect object)
    distractors: torch.Tensor  # [batch]: the token id of the distractor (subject)
    texts: list[str]  # the prompts as text

    def __len__(self) -> int:
        return len(self.texts)

    def to(self, device) -> TransferBatch:
        moved = {k: getattr(self, k).to(device) for k in ("tokens", "last", "answers", "distractors")}
        return TransferBatch(**moved, texts=self.texts)


def name_token(model, name: str) -> int:
    """The token id of ``" " + name``: the first token when the name is split (not in the zoo)."""
    return int(model.to_tokens(" " + name, prepend_bos=False)[0, 0])


def transfer_batch(model, n: int, seed: int) -> TransferBatch:
    """The first transfer of ``n`` Storyworld transfer documents (``seed``), cut before the answer.

    Returns tokens ``[n, position]`` (the model's BOS, then the prompt; shorter prompts padded
    on the right with BOS), ``last`` ``[n]``, and the answer's and distractor's ids ``[n]``.
    """
    docs = storyworld.sample_docs(seed=seed, n=n, family="transfer")
    texts = [d.text[: d.annotations["prompt_end"]] for d in docs]
    rows = [model.to_tokens(t)[0].cpu() for t in texts]
    bos = model.tokenizer.bos_token_id
    tokens = torch.full((n, max(len(r) for r in rows)), bos, dtype=torch.long)
    for i, r in enumerate(rows):
        tokens[i, : len(r)] = r
    last = torch.tensor([len(r) - 1 for r in rows])
    answers = torch.tensor([name_token(model, d.annotations["answer"]) for d in docs])
    distractors = torch.tensor([name_token(model, d.annotations["distractor"]) for d in docs])
    return TransferBatch(tokens, last, answers, distractors, texts)
