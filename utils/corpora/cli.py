"""What the corpora's command lines share: a quiet end under ``| head`` and Ctrl-C, and one
sentence for an input line that is not UTF-8 or not JSON.

``python -m utils.corpora.beliefs`` runs its commands through :func:`run_quietly` and reads
``score``'s input with :func:`line_text`; ``python -m utils.corpora.storyworld`` handles the same
cases the same way.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable

EXIT_INTERRUPTED = 130  # 128 + SIGINT: what a shell reports after Ctrl-C
EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE: the reader went away (``... | head``)


class BadLine(ValueError):
    """An input line that is not a text to score (its message says what to give instead)."""


def run_quietly(command: Callable[[], int]) -> int:
    """Run a command's body; a reader that goes away ends it with 141, Ctrl-C with 130, both
    without a traceback. Whatever the body wrote before stays whole lines: each line is one write."""
    try:
        status = command()
        sys.stdout.flush()  # a closed pipe shows up here, not at exit
        return status
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        drop_stdout()
        return EXIT_BROKEN_PIPE


def drop_stdout() -> None:
    """Point stdout at /dev/null so the exit-time flush cannot fail on the closed pipe again."""
    if sys.stdout is sys.__stdout__:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


def stdin_lines():
    """Standard input as lines of bytes (decoded by :func:`line_text`, so that no locale's
    decoding can stop the reading with a traceback)."""
    return getattr(sys.stdin, "buffer", sys.stdin)


def line_text(raw: bytes | str, example: str) -> str | None:
    """One input line as text without its line end; ``None`` for a blank line. ``example`` is a
    line to show as what to give instead of bytes that are not UTF-8."""
    if isinstance(raw, bytes):
        try:
            raw = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            raise BadLine(
                f"not UTF-8 text (byte {raw[e.start]:#04x} at column {e.start + 1}); "
                f"give UTF-8 JSON lines like {example}"
            ) from None
    line = raw.rstrip("\r\n")
    return line if line.strip() else None


def json_problem(error: json.JSONDecodeError) -> str:
    """What is wrong with a line that is not JSON, with the column it goes wrong at: ``Expecting value
    at column 1``, ``Unterminated string starting at column 10`` (json's own message may end in "at")."""
    return f"{error.msg.removesuffix(' at')} at column {error.colno}"
