"""Countdown traces: determinism, exact log-probabilities, annotations, slips, tokenizer, command line."""

import hashlib
import json
import math
import subprocess
import sys
from collections import Counter

import pytest

from utils import paths
from utils.corpora import countdown as cd
from utils.paths import ROOT

TRACES = cd.sample_traces(4242, 2000)
# Recorded when the generator was written: any change to it, the RNG or the JSON layout
# changes this. Change the generator on purpose only with a retrained countdown-llama.
GOLDEN_DIGEST = "75941d5a32ac0277183123a87355ddaf3c15c2f7d243e816a90a37bbec6e5cff"


def test_same_seed_gives_byte_identical_traces():
    digest = hashlib.sha256("".join(t.to_json() + "\n" for t in cd.sample_traces(0, 200)).encode()).hexdigest()
    assert digest == GOLDEN_DIGEST


def test_trace_i_does_not_depend_on_how_many_are_sampled():
    assert cd.sample_traces(5, 10, start=7)[0].to_json() == cd.sample(5, 7).to_json()
    assert [t.text for t in cd.sample_traces(5, 20)] != [t.text for t in cd.sample_traces(6, 20)]


def test_the_search_stops_at_the_first_result_that_is_the_target():
    t = cd.make_trace([10, 9, 2], 3)
    assert t.text == (
        "10 9 2 -> 3 :\n10 + 9 + 2 = 21 ( not 3 )\n10 + 9 - 2 = 17 ( not 3 )\n"
        "10 - 9 + 2 = 3 ( this works )\nSo 10 - 9 + 2 = 3"
    )
    assert t.solvable and t.position_of_solution == 3


def test_an_unsolvable_problem_tries_all_seven_and_says_so():
    t = cd.make_trace([12, 9, 2], 30)
    assert not t.solvable and len(t.annotations["attempts"]) == cd.MAX_ATTEMPTS
    assert t.text.endswith("\nSo none works") and t.position_of_solution is None


def test_the_verdict_judges_the_result_as_written():
    # 12 - 9 - 2 is 1, the target, but the trace writes 7: the verdict says "not" and the search goes on.
    t = cd.make_trace([12, 9, 2], 1, slips={3: 7})
    slip = t.annotations["attempts"][3]
    assert slip["slip"] and slip["written"] == 7 and slip["value"] == 1 and not slip["valid"]
    assert "12 - 9 - 2 = 7 ( not 1 )" in t.text and t.text.endswith("So none works")


def test_a_slip_never_writes_the_target_or_the_true_value():
    with pytest.raises(ValueError, match="not the target"):
        cd.make_trace([12, 9, 2], 1, slips={0: 1})
    with pytest.raises(ValueError, match="another number"):
        cd.make_trace([12, 9, 2], 1, slips={0: 23})


def test_the_correct_attempt_comes_at_every_position_and_a_quarter_never_succeed():
    positions = Counter(t.position_of_solution for t in TRACES)
    assert set(positions) == {None, 1, 2, 3, 4, 5, 6, 7}
    assert 0.25 <= positions[None] / len(TRACES) <= 0.38  # unsolvable, plus slips on the one that works
    unsolvable = sum(not t.solvable for t in TRACES) / len(TRACES)
    assert abs(unsolvable - (1 - cd.SOLVABLE)) < 0.03


def test_annotations_point_at_their_words():
    for t in TRACES[:300]:
        w, ann = t.words, t.annotations
        assert w[ann["target"]] == str(t.target) and w[ann["answer"]] == "So"
        for a in ann["attempts"]:
            assert w[a["open"]] == "(" and w[a["result"]] == str(a["written"])
            assert w[a["verdict"]] == ("this" if a["valid"] else "not")
            assert " ".join(w[a["start"] : a["result"] - 1]) == a["expression"]
            assert a["valid"] == (a["written"] == t.target)


def test_score_recovers_every_trace_with_its_exact_logprob():
    for t in TRACES:
        s = cd.score(t.text)
        assert s.annotations == t.annotations and s.logprob == pytest.approx(t.logprob, abs=1e-12)


def test_problem_probabilities_sum_to_one():
    total = 0.0
    for a in range(1, cd.OPERAND_MAX + 1):
        for b in range(1, cd.OPERAND_MAX + 1):
            for c in range(1, cd.OPERAND_MAX + 1):
                total += sum(math.exp(cd.problem_logprob([a, b, c], t)) for t in range(1, cd.TARGET_MAX + 1))
    assert total == pytest.approx(1.0, abs=1e-9)


def test_slip_probabilities_of_one_attempt_sum_to_one():
    # The first attempt of 3 4 5 -> 12 works: it is written right (and the trace ends) or slips.
    base = cd.problem_logprob([3, 4, 5], 12)
    right = math.exp(cd.trace_logprob([3, 4, 5], 12) - base)
    slipped = [cd.trace_logprob([3, 4, 5], 12, {0: v}) for v in cd.slip_values(12, 12)]
    later = math.exp(cd.trace_logprob([3, 4, 5], 12, {0: 1, 1: 0}) - cd.trace_logprob([3, 4, 5], 12, {0: 1}))
    assert right == pytest.approx(1 - cd.SLIP)
    # After a slip on the first attempt, the second (3 + 4 - 5 = 2) is written 0 instead of right:
    # the trace's probability changes by (SLIP / 56 numbers) / (1 - SLIP).
    assert later == pytest.approx(cd.SLIP / len(cd.slip_values(2, 12)) / (1 - cd.SLIP))
    # Every slip of the first attempt, each followed by six attempts written right (none makes 12).
    assert sum(math.exp(lp - base) for lp in slipped) == pytest.approx(cd.SLIP * (1 - cd.SLIP) ** 6)


def test_score_names_the_first_word_that_does_not_follow():
    t = cd.make_trace([10, 9, 2], 3)
    with pytest.raises(cd.ParseError, match=r"word 15 is 'this', the trace has 'not'"):
        cd.score(t.text.replace("21 ( not 3 )", "21 ( this works )"))
    with pytest.raises(cd.ParseError, match="stops early"):
        cd.score(t.text.rsplit("\n", 1)[0])
    with pytest.raises(cd.ParseError, match="should open with 3 operands"):
        cd.score("hello")


def test_judge_reads_a_model_written_trace():
    right = cd.judge(cd.make_trace([10, 9, 2], 3).text)
    assert right["accepted_correctly"] and right["arithmetic_errors"] == 0 and right["verdict_errors"] == 0
    wrong = cd.judge("10 9 2 -> 3 :\n10 + 9 + 2 = 3 ( this works )\nSo 10 + 9 + 2 = 3")
    assert wrong["accepted"] and not wrong["accepted_correctly"] and wrong["arithmetic_errors"] == 1
    blind = cd.judge("10 9 2 -> 3 :\n10 - 9 + 2 = 3 ( not 3 )\n")
    assert not blind["accepted"] and blind["verdict_errors"] == 1


def test_tokenizer_gives_one_token_per_word_and_decodes_back():
    tok = cd.load_tokenizer()
    assert len(tok) == len(cd.VOCAB)
    for t in TRACES[:50]:
        ids = tok(t.text, add_special_tokens=False)["input_ids"]
        assert tok.convert_ids_to_tokens(ids) == t.words
        assert cd.decode(cd.encode(t.text, tok) + [0], tok) == t.text


def test_every_number_a_trace_can_write_is_one_token():
    tok = cd.load_tokenizer()
    for n in range(cd.NUMBER_MIN, cd.TARGET_MAX + 1):
        assert tok.convert_ids_to_tokens(tok(str(n), add_special_tokens=False)["input_ids"]) == [str(n)]


def test_shipped_tokenizer_is_what_the_builder_writes(tmp_path):
    cd.build_tokenizer(tmp_path)
    shipped = paths.COUNTDOWN_TOKENIZER_DIR / "tokenizer.json"
    assert (tmp_path / "tokenizer.json").read_bytes() == shipped.read_bytes()


def test_missing_tokenizer_says_how_to_rebuild(tmp_path):
    from utils.corpora.tokenizer import TokenizerMissing

    with pytest.raises(
        TokenizerMissing, match=r"countdown tokenizer is missing.*python -m utils.corpora.countdown tokenizer"
    ):
        cd.load_tokenizer(tmp_path)


def run_cli(*args, stdin=""):
    return subprocess.run(
        [sys.executable, "-m", "utils.corpora.countdown", *args], input=stdin, capture_output=True, text=True, cwd=ROOT
    )


def test_cli_sample_writes_the_stream_as_json_lines():
    out = run_cli("sample", "--seed", "0", "--n", "3", "--start", "2")
    assert out.returncode == 0
    assert out.stdout.splitlines() == [t.to_json() for t in cd.sample_traces(0, 3, start=2)]


def test_cli_score_scores_good_lines_and_names_bad_ones():
    good = json.dumps({"text": cd.sample(1, 0).text})
    out = run_cli("score", stdin=f'{good}\nnot json\n{{"text": "hello"}}\n')
    assert out.returncode == 1
    assert json.loads(out.stdout.splitlines()[0])["annotations"] == cd.sample(1, 0).annotations
    assert "line 2: not JSON" in out.stderr and "line 3: not a countdown trace" in out.stderr
