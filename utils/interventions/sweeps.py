"""Batched activation patching: many patches, one forward pass per chunk of them.

A sweep repeats the corrupted batch once per patch and lets copy ``j`` take the clean
activation wherever ``mask[j]`` is true, so a whole sweep costs a few large forward passes
instead of one small pass per patch.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from tqdm.auto import tqdm


def patch_sweep(
    model,
    corrupted: torch.Tensor,
    hook_name: str,
    clean: torch.Tensor,
    mask: torch.Tensor,
    metric: Callable[[torch.Tensor], torch.Tensor],
    rows: int = 512,
    desc: str | None = None,
) -> torch.Tensor:
    """The metric after each patch: ``[patch]``.

    ``corrupted`` ``[batch, position]`` tokens; ``clean`` the clean activation at ``hook_name``
    (``[batch, position, d]`` or ``[batch, position, head, d_head]``); ``mask`` ``[patch, position]``
    or ``[patch, position, head]``, true where patch ``j`` puts in the clean activation. ``metric``
    turns the logits of one copy of the batch into a number. At most ``rows`` prompts run at once.
    """
    batch = corrupted.shape[0]
    per = max(1, rows // batch)
    chunks = list(torch.arange(len(mask)).split(per))
    out = []
    for idx in tqdm(chunks, desc=desc or hook_name, disable=len(chunks) < 3, leave=False):
        m = mask[idx].to(clean.device)
        k = len(idx)

        def patch(act, hook=None, m=m, k=k):
            act = act.view(k, batch, *act.shape[1:])
            where = m[:, None, ..., None]  # [patch, 1, position, (head,) 1]
            return torch.where(where, clean[None], act).view(k * batch, *act.shape[2:])

        logits = model.run_with_hooks(corrupted.repeat(k, 1), fwd_hooks=[(hook_name, patch)])
        out += [torch.as_tensor(metric(lg)) for lg in logits.view(k, batch, *logits.shape[1:])]
    return torch.stack(out).float().cpu()
