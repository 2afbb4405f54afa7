"""Countdown traces: a seeded generator of worked countdown problems with known verdicts.

A problem is three operands and a target. The trace that solves it tries ways of combining
the operands with ``+`` and ``-``, writes each attempt's result, and judges it against the
target, the way a small reasoning model does once its chain of thought has settled into a
fixed template::

    7 2 9 -> 14 :
    7 + 2 + 9 = 18 ( not 14 )
    7 + 2 - 9 = 0 ( not 14 )
    7 - 2 + 9 = 14 ( this works )
    So 7 - 2 + 9 = 14

The attempts follow one fixed search order (:data:`SEARCH_ORDER`: all seven ways of giving
the three operands signs, the first one positive) and stop at the first whose result is the
target, so the correct attempt comes anywhere from first to seventh. A quarter of the
problems have no solution: their traces try all seven and end ``So none works``.

Each word is one token of the countdown tokenizer (every number from ``-23`` to ``36`` is a
single token), and a trace is fed to a model as ``[BOS] + tokens(text)``. Annotations are
token indices into ``tokens(text)`` (no BOS: add 1 for a model's input): where the target
sits in the prompt, and for every attempt its first token, its result, the ``(`` where the
verdict is decided, the verdict word (``this`` or ``not``) and whether the attempt is valid.

Only the problem is random: everything after the prompt follows from it. ``logprob`` is
therefore the exact log-probability of the whole text under the generator, and
:func:`score` recovers a trace's problem and annotations from its text alone.

Command line::

    python -m utils.corpora.countdown sample --seed 0 --n 5
    python -m utils.corpora.countdown score < traces.jsonl
    python -m utils.corpora.countdown tokenizer          # rebuild data/countdown-tokenizer

Same seed, same bytes: trace ``i`` of a seed has its own random stream.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from utils import paths
from utils.corpora.storyworld import _nonnegative, _positive  # the same argument types as Storyworld's command line

N_OPERANDS = 3
OPERAND_MAX = 12  # operands are 1 .. 12
TARGET_MAX = N_OPERANDS * OPERAND_MAX  # targets are 1 .. 36
SOLVABLE = 0.75  # share of problems with a solution
SLIP = 0.1  # chance that an attempt's written result is wrong (never the target)

# The search order every trace follows: (which operand goes first, second, third; the signs
# before the second and third). Together these are the seven ways to give the operands signs
# with the first one positive, so every reachable value is tried.
SEARCH_ORDER: tuple[tuple[tuple[int, int, int], str], ...] = (
    ((0, 1, 2), "++"),
    ((0, 1, 2), "+-"),
    ((0, 1, 2), "-+"),
    ((0, 1, 2), "--"),
    ((1, 2, 0), "+-"),
    ((1, 0, 2), "--"),
    ((2, 0, 1), "--"),
)
MAX_ATTEMPTS = len(SEARCH_ORDER)

EOT = "<|endoftext|>"
NUMBER_MIN = 1 - 2 * OPERAND_MAX  # the smallest value an attempt can reach: 1 - 12 - 12
WORDS = ["\n", "->", ":", "+", "-", "=", "(", ")", "not", "this", "works", "So", "none"]
VOCAB = [EOT, *WORDS, *(str(n) for n in range(NUMBER_MIN, TARGET_MAX + 1))]
REBUILD_TOKENIZER = "python -m utils.corpora.countdown tokenizer"


# ---------------------------------------------------------------------------------------
# Problems and their traces


def attempts_of(operands: Sequence[int]) -> list[tuple[str, int]]:
    """(expression, value) of every attempt in :data:`SEARCH_ORDER`, for these operands."""
    out = []
    for order, signs in SEARCH_ORDER:
        x, y, z = (operands[i] for i in order)
        value = x + (y if signs[0] == "+" else -y) + (z if signs[1] == "+" else -z)
        out.append((f"{x} {signs[0]} {y} {signs[1]} {z}", value))
    return out


def reachable(operands: Sequence[int]) -> set[int]:
    """The positive values some attempt reaches: the targets of solvable problems."""
    return {v for _, v in attempts_of(operands) if v >= 1}


def problem_logprob(operands: Sequence[int], target: int) -> float:
    """Exact natural-log probability of drawing this problem."""
    values = [v for _, v in attempts_of(operands) if v >= 1]
    lp = -N_OPERANDS * math.log(OPERAND_MAX)
    if target in values:
        return lp + math.log(SOLVABLE * values.count(target) / len(values))
    unreachable = TARGET_MAX - len(set(values) & set(range(1, TARGET_MAX + 1)))
    return lp + math.log((1 - SOLVABLE) / unreachable)


def slip_values(value: int, target: int) -> list[int]:
    """What a slip may write instead of ``value``: any other number but the target."""
    return [n for n in range(NUMBER_MIN, TARGET_MAX + 1) if n not in (value, target)]


def trace_words(operands: Sequence[int], target: int, slips: dict[int, int] | None = None) -> list[str]:
    """The trace of a problem as a list of words (tokens), ``"\n"`` included.

    ``slips`` maps an attempt's number (0 for the first) to the wrong result it writes. The
    verdict always judges the result as written: a slip on the attempt that would have
    worked reads ``( not T )`` and the search goes on.
    """
    slips = slips or {}
    words = [*map(str, operands), "->", str(target), ":"]
    answer = None
    for k, (expression, value) in enumerate(attempts_of(operands)):
        written = slips.get(k, value)
        verdict = ["this", "works"] if written == target else ["not", str(target)]
        words += ["\n", *expression.split(), "=", str(written), "(", *verdict, ")"]
        if written == target:
            answer = expression
            break
    words += ["\n", "So", *(answer.split() + ["=", str(target)] if answer else ["none", "works"])]
    return words


def trace_logprob(operands: Sequence[int], target: int, slips: dict[int, int] | None = None) -> float:
    """Exact natural-log probability of the whole trace: the problem, then each attempt's
    slip or not (everything else follows from those)."""
    slips = slips or {}
    lp = problem_logprob(operands, target)
    for k, (_, value) in enumerate(attempts_of(operands)):
        if k in slips:
            lp += math.log(SLIP / len(slip_values(value, target)))
        else:
            lp += math.log(1 - SLIP)
            if value == target:
                break
    return lp


def text_of(words: Sequence[str]) -> str:
    """Words joined as text: a space between words, none around a newline."""
    return " ".join(words).replace(" \n ", "\n")


def words_of(text: str) -> list[str]:
    """The words (tokens) of a text: split at spaces, each newline a word of its own."""
    return [w for w in text.replace("\n", " \n ").split(" ") if w]


def annotate(words: Sequence[str]) -> dict:
    """Token-level annotations of a trace's words (indices into ``words``, no BOS).

    Each attempt: ``start`` (its first word), ``expression``, ``result`` (the written
    result's index) and ``written`` (its number), ``value`` (what the expression really
    makes), ``slip`` (the two differ), ``open`` (the ``(``), ``verdict`` (``this`` or
    ``not``) and ``valid`` (the verdict is ``this``: the written result is the target).
    """
    attempts = []
    for i, w in enumerate(words):
        if w == "(":
            start = i - 1
            while words[start - 1] != "\n":
                start -= 1
            expression = " ".join(words[start : i - 2])
            x, s1, y, s2, z = expression.split()
            value = int(x) + (int(y) if s1 == "+" else -int(y)) + (int(z) if s2 == "+" else -int(z))
            attempts.append(
                {
                    "start": start,
                    "expression": expression,
                    "result": i - 1,
                    "written": int(words[i - 1]),
                    "value": value,
                    "slip": value != int(words[i - 1]),
                    "open": i,
                    "verdict": i + 1,
                    "valid": words[i + 1] == "this",
                }
            )
    return {
        "operands": [0, 1, 2],
        "target": N_OPERANDS + 1,
        "attempts": attempts,
        "answer": len(words) - 1 - words[::-1].index("So"),
    }


@dataclass
class Trace:
    """One countdown trace: its text, its problem, token-level annotations and exact logprob."""

    text: str
    operands: list[int]
    target: int
    solvable: bool
    annotations: dict
    logprob: float
    seed: int | None = None
    index: int | None = None

    @property
    def words(self) -> list[str]:
        return words_of(self.text)

    @property
    def position_of_solution(self) -> int | None:
        """1-based number of the attempt that works (``None`` for an unsolvable problem)."""
        valid = [k for k, a in enumerate(self.annotations["attempts"], 1) if a["valid"]]
        return valid[0] if valid else None

    def to_json(self) -> str:
        return json.dumps(asdict(self))


def make_trace(
    operands: Sequence[int],
    target: int,
    slips: dict[int, int] | None = None,
    seed: int | None = None,
    index: int | None = None,
) -> Trace:
    """The trace of one problem (any operands 1..12 and target 1..36), with ``slips`` (attempt
    number -> wrong result written; none by default)."""
    operands = [int(x) for x in operands]
    if len(operands) != N_OPERANDS or not all(1 <= x <= OPERAND_MAX for x in operands):
        raise ValueError(f"a problem has {N_OPERANDS} operands from 1 to {OPERAND_MAX}, not {operands}")
    if not 1 <= target <= TARGET_MAX:
        raise ValueError(f"the target must be from 1 to {TARGET_MAX}, not {target}")
    slips = {int(k): int(v) for k, v in (slips or {}).items()}
    for k, v in slips.items():
        value = attempts_of(operands)[k][1]
        if v not in slip_values(value, target):
            raise ValueError(
                f"attempt {k} makes {value}: a slip writes another number "
                f"from {NUMBER_MIN} to {TARGET_MAX}, not the target"
            )
    words = trace_words(operands, target, slips)
    ann = annotate(words)
    made = len(ann["attempts"])
    slips = {k: v for k, v in slips.items() if k < made}
    return Trace(
        text_of(words),
        operands,
        int(target),
        target in reachable(operands),
        ann,
        trace_logprob(operands, target, slips),
        seed,
        index,
    )


def sample(seed: int, index: int) -> Trace:
    """Trace number ``index`` of the stream with this ``seed`` (its own random stream)."""
    rng = random.Random(f"countdown/{seed}/{index}")  # str seeds hash with sha512: portable
    operands = [rng.randint(1, OPERAND_MAX) for _ in range(N_OPERANDS)]
    values = [v for _, v in attempts_of(operands) if v >= 1]
    if rng.random() < SOLVABLE:
        target = rng.choice(values)
    else:
        target = rng.choice(sorted(set(range(1, TARGET_MAX + 1)) - set(values)))
    slips = {}
    for k, (_, value) in enumerate(attempts_of(operands)):  # drawn for all seven: only those made count
        if rng.random() < SLIP:
            slips[k] = rng.choice(slip_values(value, target))
    return make_trace(operands, target, slips, seed, index)


def sample_traces(seed: int, n: int, start: int = 0) -> list[Trace]:
    """Traces ``start`` .. ``start + n - 1`` of the stream with this seed."""
    return [sample(seed, i) for i in range(start, start + n)]


class ParseError(ValueError):
    """A text that is not a countdown trace; the message says where it goes wrong."""


def score(text: str) -> Trace:
    """Recover a trace's problem from its text and check the rest follows from it."""
    words = words_of(text)
    try:
        operands, target = [int(w) for w in words[:N_OPERANDS]], int(words[N_OPERANDS + 1])
        if words[N_OPERANDS] != "->" or words[N_OPERANDS + 2] != ":":
            raise ValueError
        make_trace(operands, target)
    except (ValueError, IndexError):
        raise ParseError(
            f"not a countdown trace: it should open with {N_OPERANDS} operands from 1 to {OPERAND_MAX}, "
            f"'->', a target from 1 to {TARGET_MAX} and ':', like '7 2 9 -> 14 :'"
        ) from None
    # The results as written: those that differ from the expression's value are slips.
    slips = {}
    for k, (_, value) in enumerate(attempts_of(operands)):
        at = N_OPERANDS + 3 + 12 * k + 7  # "\n x s y s z =" then the result
        if at < len(words) and words[at].lstrip("-").isdigit() and int(words[at]) != value:
            slips[k] = int(words[at])
    try:
        trace = make_trace(operands, target, slips)
    except ValueError as e:
        raise ParseError(f"not a countdown trace: {e}") from None
    expected = trace.words
    for i, (got, want) in enumerate(zip(words, expected)):
        if got != want:
            raise ParseError(f"not the trace of this problem: word {i} is {got!r}, the trace has {want!r}")
    if len(words) != len(expected):
        more = "stops early" if len(words) < len(expected) else "goes on after the answer"
        raise ParseError(f"not the trace of this problem: it {more} (word {min(len(words), len(expected))})")
    return trace


# ---------------------------------------------------------------------------------------
# Reading a model's own attempts


def judge(text: str) -> dict:
    """What a (possibly model-written) trace does, attempt by attempt, from its text.

    Returns the attempts that could be read (expression, the result written, the true
    value, the verdict written) and a summary: ``accepted`` (some attempt says
    ``this works``), ``accepted_correctly`` (the first one that does is truly the target),
    ``arithmetic_errors`` and ``verdict_errors`` (a verdict that disagrees with the
    written result and the target).
    """
    words = words_of(text)
    try:
        target = int(words[N_OPERANDS + 1])
    except (ValueError, IndexError):
        raise ParseError("not a countdown trace: no target after '->'") from None
    attempts, accepted = [], None
    lines = " ".join(words[N_OPERANDS + 3 :]).split("\n")
    for line in lines:
        w = line.split()
        if len(w) < 9 or w[3] not in "+-" or w[1] not in "+-" or w[5] != "=" or w[7] != "(":
            continue
        try:
            x, y, z, written = int(w[0]), int(w[2]), int(w[4]), int(w[6])
        except ValueError:
            continue
        true = x + (y if w[1] == "+" else -y) + (z if w[3] == "+" else -z)
        verdict = "this" if w[8] == "this" else "not" if w[8] == "not" else w[8]
        attempts.append({"expression": " ".join(w[:5]), "written": written, "value": true, "verdict": verdict})
        if verdict == "this" and accepted is None:
            accepted = attempts[-1]
    return {
        "target": target,
        "attempts": attempts,
        "accepted": accepted is not None,
        "accepted_correctly": accepted is not None and accepted["value"] == target,
        "arithmetic_errors": sum(a["written"] != a["value"] for a in attempts),
        "verdict_errors": sum((a["verdict"] == "this") != (a["written"] == target) for a in attempts),
    }


# ---------------------------------------------------------------------------------------
# Tokenizer: one token per word


def build_tokenizer(out_dir: Path | None = None) -> Path:
    """Write the countdown tokenizer (a fixed word-level vocabulary) as HF tokenizer files."""
    from tokenizers import Regex, pre_tokenizers

    from utils.corpora.tokenizer import save_word_level

    # Words are separated by spaces; a newline is a word of its own.
    words = pre_tokenizers.Split(Regex(r"\S+|\n"), behavior="removed", invert=True)
    return save_word_level(VOCAB, words, 1024, out_dir or paths.COUNTDOWN_TOKENIZER_DIR)


def load_tokenizer(path: str | Path | None = None):
    """The countdown tokenizer from ``data/countdown-tokenizer`` (offline)."""
    from utils.corpora.tokenizer import load_tokenizer as load

    return load(path or paths.COUNTDOWN_TOKENIZER_DIR, rebuild=REBUILD_TOKENIZER)


def encode(text: str, tokenizer=None) -> list[int]:
    """``[BOS] + tokens(text)``: what a model reads (no EOS: add it to score the stop)."""
    tokenizer = tokenizer or load_tokenizer()
    return [0] + tokenizer(text, add_special_tokens=False)["input_ids"]


def decode(ids: Sequence[int], tokenizer=None) -> str:
    """The text of token ids (BOS and EOS dropped), with newlines where the trace has them."""
    tokenizer = tokenizer or load_tokenizer()
    words = [w for w in tokenizer.convert_ids_to_tokens(list(ids)) if w != EOT]
    return text_of(words).strip(" ")


# ---------------------------------------------------------------------------------------
# Command line


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="python -m utils.corpora.countdown",
        description="Sample countdown traces as JSON lines, re-score texts, or rebuild the countdown tokenizer.",
    )
    sub = ap.add_subparsers(dest="command", required=True)
    sp = sub.add_parser("sample", help="write N traces of seed S as JSON lines")
    sp.add_argument("--seed", type=int, required=True, help="stream seed (any integer)")
    sp.add_argument("--n", type=_positive, required=True, help="number of traces")
    sp.add_argument("--start", type=_nonnegative, default=0, help="index of the first trace")
    sub.add_parser("score", help='read JSON lines {"text": ...} from stdin, write each trace with its annotations')
    sub.add_parser("tokenizer", help=f"rebuild {paths.shown(paths.COUNTDOWN_TOKENIZER_DIR)} (the same file every time)")
    return ap


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "sample":
            for i in range(args.start, args.start + args.n):
                sys.stdout.write(sample(args.seed, i).to_json() + "\n")
            sys.stdout.flush()
            return 0
        if args.command == "tokenizer":
            out = build_tokenizer()
            print(f"wrote {paths.shown(out)} ({len(VOCAB)} tokens)", file=sys.stderr)
            return 0
        bad = 0
        for lineno, line in enumerate(sys.stdin, 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
                text = obj["text"] if isinstance(obj, dict) else None
                if not isinstance(text, str):
                    raise ParseError('give one JSON object per line with a "text" string')
                sys.stdout.write(score(text).to_json() + "\n")
            except json.JSONDecodeError as e:
                bad += 1
                print(f"line {lineno}: not JSON ({e.msg} at column {e.colno})", file=sys.stderr)
            except ParseError as e:
                bad += 1
                print(f"line {lineno}: {e}", file=sys.stderr)
        sys.stdout.flush()
        return 1 if bad else 0
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 141


if __name__ == "__main__":
    sys.exit(main())
