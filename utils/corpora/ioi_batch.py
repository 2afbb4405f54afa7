"""A batch of indirect-object prompts from Storyworld's transfer documents, tokenized by any model.

"When Ann and Bob went to the park, Bob gave the kite to" -> " Ann": the *answer* is the
indirect object, the *distractor* the subject who gives (named twice in the prompt). The
prompts differ in length, so the batch is right-padded and ``last`` says where each ends.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from utils.corpora import storyworld


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


def name_pieces(model, name: str) -> list[int]:
    """The token ids of ``" " + name``: one with the course tokenizer, maybe several with another."""
    return model.to_tokens(" " + name, prepend_bos=False)[0].tolist()


def names_fit(model, a: str, b: str) -> bool:
    """Whether two names can trade places in a prompt without changing its length, and stay apart by
    their first tokens (which the lessons read): always with the course tokenizer, which keeps every
    name whole; a tokenizer trained elsewhere may split a rare name."""
    pa, pb = name_pieces(model, a), name_pieces(model, b)
    return len(pa) == len(pb) and pa[0] != pb[0]


def transfer_batch(model, n: int, seed: int) -> TransferBatch:
    """The first transfer of the first ``n`` Storyworld transfer documents (``seed``) whose two names
    ``model``'s tokenizer tells apart by their first tokens (all of them, with the course tokenizer; up to
    ``8 n`` stories are drawn, for tokenizers that split many names),
    cut before the answer.

    Returns tokens ``[n, position]`` (the model's BOS, then the prompt; shorter prompts padded
    on the right with BOS), ``last`` ``[n]``, and the answer's and distractor's ids ``[n]``.
    """
    for drawn_n in (2 * n, 4 * n, 8 * n):  # the draw is a prefix of the next: the first n that fit stay first
        drawn = storyworld.sample_docs(seed=seed, n=drawn_n, family="transfer")
        docs = [d for d in drawn if names_fit(model, d.annotations["answer"], d.annotations["distractor"])][:n]
        if len(docs) == n:
            break
    else:
        raise ValueError(f"only {len(docs)} of {drawn_n} stories have two names this tokenizer tells apart")
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
