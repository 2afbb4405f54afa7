"""The notebook client every run of a notebook in the course goes through: nbclient's, with one fault fixed.

nbclient stands in for a frontend's Output widget: each time a cell prints into one (``with out:
print(...)``, and every ``widgets.interactive`` does), it sends the widget's new state back to the
kernel on the shell socket. It sends from the task that reads the kernel's outputs, while another task
is waiting on that same socket for the cell's reply. A ZeroMQ socket tells the event loop that it can
be read by an edge, not a level, and the send can use up the edge that the reply's arrival made: the
waiting task then sleeps on a socket that already holds its reply, until its timeout, although the
kernel finished long ago. Measured here: three cells that each print 100 times into an Output widget,
run 20 times, waited out the whole cell timeout in 7 of the 20 runs (the course's stall watch stops
such a wait after a minute, and CI once saw it twice in a row in one test).

The fix: a wait on a kernel channel is made of waits of at most :data:`SLICE` seconds. Each new wait
looks at the socket itself before sleeping, so a lost edge costs at most one slice (the same 20 runs:
no wait over 3 s). Nothing else changes.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from queue import Empty
from typing import Any

from nbclient import NotebookClient
from nbclient.util import run_sync

SLICE = 0.25  # seconds: the longest a reply already on the socket can wait unnoticed


def in_slices(get_msg: Callable[..., Awaitable[dict]]) -> Callable[..., Awaitable[dict]]:
    """A channel's ``get_msg`` that waits as long as asked, but in waits of at most ``SLICE`` seconds."""

    async def get_msg_in_slices(timeout: float | None = None) -> dict:
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            left = SLICE if deadline is None else min(SLICE, max(0.0, deadline - time.monotonic()))
            try:
                return await get_msg(timeout=left)
            except Empty:
                if deadline is not None and time.monotonic() >= deadline:
                    raise

    return get_msg_in_slices


class CourseNotebookClient(NotebookClient):
    """nbclient's NotebookClient whose waits on the shell and IOPub channels are sliced (:func:`in_slices`)."""

    async def async_start_new_kernel_client(self) -> Any:
        kc = await super().async_start_new_kernel_client()
        for channel in (kc.shell_channel, kc.iopub_channel):
            channel.get_msg = in_slices(channel.get_msg)
        return kc

    # nbclient's own synchronous twin is bound to its own coroutine, not to this one
    start_new_kernel_client = run_sync(async_start_new_kernel_client)
