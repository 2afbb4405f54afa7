"""Token streams for training: Storyworld documents, countdown traces or belief stories packed into rows.

Shared by the zoo's model training (``utils.model_zoo.train``) and its SAEs' activation caches
(``utils.model_zoo.saes``), which imports nothing else of training.
"""

from __future__ import annotations

import platform

import torch

from utils.corpora import beliefs, countdown, storyworld
from utils.corpora.tokenizer import EOT


class PackedStream:
    """Rows of ``n_ctx + 1`` tokens, each starting at a document: ``EOT doc EOT doc ...``.

    The row ends with as much of its last document as fits. ``cursor`` (the index of the
    next document of the corpus's stream) is all the state needed to resume. ``corpus`` is
    ``"storyworld"``, ``"countdown"`` (whose documents are traces) or ``"beliefs"`` (stories, each with its follow-up
    questions: ``beliefs.sample_training``).
    """

    def __init__(self, seed: int, n_ctx: int, tokenizer, cursor: int = 0, corpus: str = "storyworld"):
        self.seed, self.n_ctx, self.tok, self.cursor = seed, n_ctx, tokenizer, cursor
        self.eot = tokenizer.convert_tokens_to_ids(EOT)
        self.sample = {
            "storyworld": storyworld.sample_docs,
            "countdown": countdown.sample_traces,
            "beliefs": beliefs.sample_training,
        }[corpus]
        self._buffer: list[list[int]] = []

    def _next_doc(self) -> list[int]:
        if not self._buffer:
            docs = self.sample(self.seed, 256, start=self.cursor)
            ids = self.tok([d.text for d in docs], add_special_tokens=False)["input_ids"]
            self._buffer = [i + [self.eot] for i in ids][::-1]
        self.cursor += 1
        return self._buffer.pop()

    def batch(self, size: int) -> torch.Tensor:
        rows = []
        for _ in range(size):
            row = [self.eot]
            while len(row) < self.n_ctx + 1:
                row += self._next_doc()
            rows.append(row[: self.n_ctx + 1])
        return torch.tensor(rows)

    def state(self) -> int:
        """Index of the next unused document (buffered ones are regenerated on resume)."""
        return self.cursor


def device_name(device: str) -> str:
    """What a run was trained on, for its record: the GPU's name, or the CPU and its thread count."""
    if device.startswith("cuda"):
        return torch.cuda.get_device_name(0)
    n = torch.get_num_threads()
    return f"{platform.processor() or platform.machine()} CPU, {n} thread{'s' if n > 1 else ''}"
