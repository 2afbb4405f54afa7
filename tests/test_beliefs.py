"""Belief stories: seeded, exact, annotated, every belief known, with twins that keep positions."""

import collections
import itertools
import json
import math
import os
import random
import signal
import subprocess
import sys

import pytest

from utils.corpora import beliefs as b
from utils.paths import ROOT

DOCSTRING_STORY = (
    "Ann and Bob . Bob can see Ann . Ann fills the cup with tea . Bob fills the jar with milk . "
    "Bob cannot see Ann . Ann fills the cup with beer . Q Bob cup ? A tea"
)


def test_the_same_seed_gives_the_same_stories_and_each_index_its_own():
    assert [s.text for s in b.sample_stories(3, 5)] == [s.text for s in b.sample_stories(3, 5)]
    assert b.sample(3, 7).text == b.sample_stories(3, 3, start=6)[1].text
    assert len({s.text for s in b.sample_stories(3, 50)}) == 50


def test_the_docstrings_story_is_a_false_belief():
    story = b.score(DOCSTRING_STORY)
    assert story.kind == "false" and story.answer == "tea"
    assert story.beliefs["Bob"]["cup"] == "tea" and story.reality["cup"] == "beer"
    assert story.beliefs["Ann"] == {"cup": "beer", "jar": "unknown"}, "nobody sees anybody unless told"


def test_a_fill_is_known_to_its_actor_and_whoever_can_see_the_actor_at_that_moment():
    plan = b.Plan(("Ann", "Bob"), ("cup", "jar"), ("tea", "milk"), (1, 0, True), (0, "beer"), None, (1, 0))
    story = b.make_story(plan)
    assert story.beliefs["Bob"]["cup"] == "beer" and story.kind == "seen", "still watching: he saw the refill"
    cannot = b.make_story(b.Plan(("Ann", "Bob"), ("cup", "jar"), ("tea", "milk"), (1, 0, False), None, None, (1, 0)))
    assert cannot.beliefs["Bob"]["cup"] == "unknown" and cannot.kind == "unknown"


def test_every_story_reads_back_to_its_plan_and_log_probability():
    for story in b.sample_stories(11, 300) + b.sample_stories(12, 100, more_characters=True):
        again = b.score(story.text)
        assert again.plan == story.plan and again.logprob == pytest.approx(story.logprob, abs=1e-12)


@pytest.mark.parametrize("more", [False, True], ids=["two characters", "three characters"])
def test_the_probabilities_of_every_story_with_the_same_cast_sum_to_the_casts_probability(more):
    cast = b.sample(4, 0, more_characters=more).plan
    n = len(cast.characters)
    sentences = [None, *((o, a, can) for o, a in b.pairs(n) for can in (True, False))]
    refills = [None, *((a, d) for a in range(n) for d in b.DRINKS if d != cast.drinks[a])]
    total = 0.0
    for before, refill in itertools.product(sentences, refills):
        for after, question in itertools.product(
            sentences if refill else [None], itertools.product(range(n), repeat=2)
        ):
            plan = b.Plan(cast.characters, cast.containers, cast.drinks, before, refill, after, question)
            total += math.exp(b.plan_logprob(plan))
    cast_p = math.prod(1 / ((len(b.NAMES) - i) * (len(b.CONTAINERS) - i) * len(b.DRINKS)) for i in range(n))
    assert total == pytest.approx(cast_p, rel=1e-9)


def test_the_sampler_draws_plans_as_often_as_their_probability_says():
    stories = b.sample_stories(13, 3000)
    shapes = collections.Counter((s.plan.see_before is None, s.plan.refill is None) for s in stories)
    assert shapes[(True, True)] / 3000 == pytest.approx((1 - b.SEE_BEFORE) * (1 - b.REFILL), abs=0.03)
    kinds = collections.Counter(s.kind for s in stories)
    assert set(kinds) == set(b.KINDS) and kinds["false"] / 3000 > 0.03, kinds


def test_annotations_point_at_the_words_they_name():
    for story in b.sample_stories(14, 200):
        words, a = story.words, story.annotations
        assert [words[i] for i in a["characters"]] == list(story.plan.characters)
        for fill in a["fills"]:
            assert words[fill["actor"]] in b.NAMES and words[fill["container"]] in b.CONTAINERS
            assert words[fill["drink"]] in b.DRINKS and words[fill["end"]] == "."
        for sentence in a["visibility"]:
            assert words[sentence["verb"]] in ("can", "cannot") and words[sentence["actor"]] in b.NAMES
        q = a["question"]
        assert words[q["answer_at"]] == "A" and q["answer_at"] == len(words) - 2
        assert story.beliefs[words[q["character"]]][words[q["container"]]] == story.answer


def test_three_character_stories_are_held_apart_from_training_stories():
    assert all(len(s.plan.characters) == 3 for s in b.sample_stories(15, 20, more_characters=True))
    assert all(len(s.plan.characters) == 2 for s in b.sample_stories(15, 20))


def differing(a, c):
    assert len(a.words) == len(c.words), "a twin keeps every word at its position"
    return [i for i, (x, y) in enumerate(zip(a.words, c.words)) if x != y]


def test_a_drink_twin_changes_one_fill_and_every_belief_that_rests_on_it():
    story = b.score(DOCSTRING_STORY)
    twin = b.with_drink(story, 0, "coffee")
    assert differing(story, twin) == [story.annotations["fills"][0]["drink"], len(story.words) - 1]
    assert twin.answer == "coffee" and twin.reality["cup"] == "beer"
    with pytest.raises(ValueError, match="3 fills, numbered from 0; not 5"):
        b.with_drink(story, 5, "tea")


def test_a_visibility_twin_flips_one_word_and_the_beliefs_follow():
    story = b.score(DOCSTRING_STORY)
    twin = b.with_visibility_flipped(story, 0)
    assert differing(story, twin) == [story.annotations["visibility"][0]["verb"], len(story.words) - 1]
    assert twin.answer == "unknown" and twin.kind == "unknown", "Bob never saw Ann fill the cup"
    seen = b.with_visibility_flipped(story, 1)
    assert seen.answer == "beer" and seen.kind == "seen", "Bob kept watching and saw the refill"
    plain = b.make_story(b.Plan(("Ann", "Bob"), ("cup", "jar"), ("tea", "milk"), None, None, None, (0, 0)))
    with pytest.raises(ValueError, match="0 visibility sentences"):
        b.with_visibility_flipped(plain)


def test_a_character_twin_tells_the_same_events_of_the_other_character():
    story = b.score(DOCSTRING_STORY)
    twin = b.with_characters_swapped(story)
    assert twin.text.startswith("Bob and Ann . Ann can see Bob . Bob fills the cup with tea .")
    assert twin.beliefs["Ann"]["cup"] == "tea" and twin.answer == "tea"
    assert set(differing(story, twin)) == {i for i, w in enumerate(story.words) if w in ("Ann", "Bob")}


def test_a_text_that_is_not_a_belief_story_is_refused_with_the_shape_it_should_have():
    for text in ["hello there", "Ann and Bob . Ann fills the cup with tea . Q Bob cup ? A tea"]:
        with pytest.raises(b.ParseError, match="not a belief story|not the story its choices make"):
            b.score(text)


def test_a_plan_outside_the_stories_rules_is_refused_in_a_sentence():
    with pytest.raises(ValueError, match="all different"):
        b.make_story(b.Plan(("Ann", "Ann"), ("cup", "jar"), ("tea", "milk"), None, None, None, (0, 0)))
    with pytest.raises(ValueError, match="only before a refill"):
        b.make_story(b.Plan(("Ann", "Bob"), ("cup", "jar"), ("tea", "milk"), None, None, (0, 1, True), (0, 0)))
    with pytest.raises(ValueError, match="other than the one in the container"):
        b.make_story(b.Plan(("Ann", "Bob"), ("cup", "jar"), ("tea", "milk"), None, (0, "tea"), None, (0, 0)))


def test_every_word_is_one_token_of_the_committed_tokenizer_and_it_rebuilds_byte_for_byte(tmp_path):
    from utils.paths import BELIEFS_TOKENIZER_DIR

    tokenizer = b.load_tokenizer()
    for story in b.sample_stories(16, 100) + b.sample_stories(16, 30, more_characters=True):
        ids = b.encode(story.text, tokenizer)
        assert ids[0] == 0 and tokenizer.convert_ids_to_tokens(ids[1:]) == story.words
    b.build_tokenizer(tmp_path)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        assert (tmp_path / name).read_bytes() == (BELIEFS_TOKENIZER_DIR / name).read_bytes(), name


def test_the_answer_fill_is_the_last_fill_of_the_container_the_asked_character_knows_of():
    story = b.score(DOCSTRING_STORY)
    assert b.answer_fill(story.plan) == 0, "Bob saw the tea (fill 0), not the beer (fill 2)"
    assert b.answer_fill(b.with_visibility_flipped(story, 1).plan) == 2, "watching, he saw the refill"
    assert b.answer_fill(b.with_visibility_flipped(story, 0).plan) is None, "he saw no fill of the cup"
    for s in b.sample_stories(17, 300):
        fill = b.answer_fill(s.plan)
        drink = None if fill is None else s.words[s.annotations["fills"][fill]["drink"]]
        assert (drink or b.UNKNOWN) == s.answer


def test_a_question_twin_changes_only_the_question_and_the_answer():
    story = b.score(DOCSTRING_STORY)
    twin = b.with_question(story, (0, 1))
    q = story.annotations["question"]
    assert differing(story, twin) == [q["character"], q["container"], len(story.words) - 1]
    assert twin.text.endswith("Q Ann jar ? A unknown")


def test_a_new_cast_keeps_the_shape_and_shares_no_name_container_or_drink():
    import random

    rng = random.Random(0)
    for story in b.sample_stories(18, 200):
        twin = b.with_new_cast(story, rng)
        assert len(twin.words) == len(story.words) and twin.annotations == story.annotations
        assert twin.kind == story.kind and b.answer_fill(twin.plan) == b.answer_fill(story.plan)
        content = set(b.NAMES) | set(b.CONTAINERS) | set(b.DRINKS)
        assert not (set(story.words) & set(twin.words) & content)
        assert [w for w in story.words if w not in content] == [w for w in twin.words if w not in content]


def test_a_pointer_twin_asks_about_another_known_fill_of_a_story_of_the_same_shape():
    rng = random.Random(5)
    stories = b.sample_stories(13, 200)
    twins = [(s, b.pointer_twin(s, rng)) for s in stories]
    assert all(t is None for s, t in twins if b.answer_fill(s.plan) is None)
    found = [(s, t) for s, t in twins if t is not None]
    assert len(found) > 50
    for s, t in found:
        assert t.annotations["fills"] == s.annotations["fills"]
        assert b.answer_fill(t.plan) not in (None, b.answer_fill(s.plan))
        assert not set(s.plan.drinks) & set(t.plan.drinks)


def test_a_training_story_is_the_lesson_story_followed_by_every_other_question_answered():
    for i in range(50):
        story, trained = b.sample(31, i), b.sample(31, i, follow_up=True)
        assert trained.text.startswith(story.text + " Q ") and trained.answer == story.answer
        assert trained.kind == story.kind and trained.annotations["question"] == story.annotations["question"]
        n = len(story.plan.characters)
        asked = [story.plan.question, *trained.plan.follow_up]
        assert sorted(asked) == [(w, x) for w in range(n) for x in range(n)]
        for q, where in zip(trained.plan.follow_up, trained.annotations["follow_up"]):
            assert trained.words[where["answer_at"] + 1] == b.with_question(story, q).answer
        assert math.isclose(trained.logprob, story.logprob - math.log(math.factorial(n * n - 1)))
        assert b.score(trained.text).plan == trained.plan


def test_belief_stories_pack_into_training_rows_that_start_at_a_story():
    from utils.model_zoo.packing import PackedStream

    tokenizer = b.load_tokenizer()
    stream = PackedStream(31, 64, tokenizer, corpus="beliefs")
    rows = stream.batch(4)
    assert rows.shape == (4, 65) and (rows[:, 0] == 0).all()
    first = b.sample(31, 0, follow_up=True)  # the training stream asks every question of a story
    assert rows[0, 1 : 1 + len(first.words)].tolist() == b.encode(first.text, tokenizer)[1:]


def test_a_question_twin_is_the_same_story_asking_a_question_with_another_answer():
    rng = random.Random(3)
    for s in b.sample_stories(14, 100):
        twin = b.question_twin(s, rng)
        answers = {b.with_question(s, q).answer for q in b.all_questions(len(s.plan.characters))}
        if twin is None:
            assert answers == {s.answer}
            continue
        assert twin.answer != s.answer and twin.annotations == s.annotations
        assert [
            w for i, w in enumerate(twin.words) if i not in (len(s.words) - 5, len(s.words) - 4, len(s.words) - 1)
        ] == [w for i, w in enumerate(s.words) if i not in (len(s.words) - 5, len(s.words) - 4, len(s.words) - 1)]


def test_an_order_twin_asks_by_index_about_another_character_or_container_of_a_new_cast():
    rng = random.Random(5)
    for change, moved in (("character", (True, False)), ("container", (False, True)), ("both", (True, True))):
        kept = 0
        for s in b.sample_stories(15, 60) + b.sample_stories(15, 20, more_characters=True):
            twin = b.order_twin(s, rng, change)
            if twin is None:
                continue
            kept += 1
            (w, x), (w2, x2) = s.plan.question, twin.plan.question
            assert ((w2 != w), (x2 != x)) == moved
            assert b.with_question(s, (w2, x2)).answer != s.answer  # the move shows in the answer
            assert not set(twin.plan.characters + twin.plan.containers) & set(s.plan.characters + s.plan.containers)
            assert twin.annotations["fills"] == s.annotations["fills"]  # the same shape: every fill where it was
        assert kept >= 20, change
    with pytest.raises(ValueError, match="'character', 'container' or 'both'"):
        b.order_twin(b.sample(15, 0), rng, "drink")


def test_recency_puts_the_refilled_container_first_and_the_others_latest_first():
    story = "Ann and Bob . Ann fills the cup with tea . Bob fills the jar with milk . Q Ann jar ? A unknown"
    plan = b.score(story).plan
    assert b.by_recency(plan) == [1, 0]
    refilled = b.score(
        "Ann and Bob . Ann fills the cup with tea . Bob fills the jar with milk . Ann fills the cup with beer . "
        "Q Ann jar ? A unknown"
    ).plan
    assert b.by_recency(refilled) == [0, 1]
    three = next(s for s in b.sample_stories(16, 50, more_characters=True) if s.plan.refill is None)
    assert b.by_recency(three.plan) == [2, 1, 0]


def test_a_refill_given_to_another_character_keeps_every_word_in_place_and_changes_recency():
    rng = random.Random(6)
    moved = 0
    for s in b.sample_stories(17, 80):
        if s.plan.refill is None:
            with pytest.raises(ValueError, match="no refill"):
                b.with_refill_by(s, 0)
            continue
        other = 1 - s.plan.refill[0]
        if s.plan.drinks[other] == s.plan.refill[1]:
            with pytest.raises(ValueError):
                b.with_refill_by(s, other)
            continue
        t = b.with_refill_by(s, other)
        moved += 1
        assert len(t.words) == len(s.words) and t.annotations["fills"] == s.annotations["fills"]
        assert t.words[: s.annotations["fills"][-1]["actor"]] == s.words[: s.annotations["fills"][-1]["actor"]]
        assert b.by_recency(t.plan) == b.by_recency(s.plan)[::-1]
        assert b.with_new_cast(t, rng).plan.refill[0] == other
    assert moved >= 10


# ---------------------------------------------------------------------------------------
# The command line: quiet under `| head` and Ctrl-C, one sentence per line it cannot score


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "utils.corpora.beliefs", *args]


def _popen(*args: str, **kwargs) -> subprocess.Popen:
    return subprocess.Popen(
        _cli(*args),
        cwd=ROOT,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        # Ctrl-C as in a terminal, even when the suite itself runs as a background job (which ignores SIGINT)
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        **kwargs,
    )


def test_sample_into_head_ends_quietly_with_the_broken_pipe_code():
    proc = _popen("sample", "--seed", "7", "--n", "100000", stdin=subprocess.DEVNULL)
    first = proc.stdout.readline()
    proc.stdout.close()  # what `| head -1` does after its line
    err = proc.stderr.read().decode()
    assert proc.wait(60) == 141, err
    assert err == "" and json.loads(first)["seed"] == 7


def test_ctrl_c_during_sample_ends_quietly_and_leaves_whole_lines():
    proc = _popen("sample", "--seed", "7", "--n", "10000000", stdin=subprocess.DEVNULL)
    early = proc.stdout.read1(1)  # stories are being written
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    out = early + out
    assert proc.returncode == 130, err.decode()[-2000:]
    assert err == b""
    assert out.endswith(b"\n") and all(json.loads(line) for line in out.splitlines())


def _score(data: bytes, strict: bool) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "LC_ALL": "C.UTF-8"}
    if strict:  # how stdin decodes under a real en_US.UTF-8 locale
        env["PYTHONIOENCODING"] = "utf-8:strict"
    return subprocess.run(_cli("score"), input=data, capture_output=True, cwd=ROOT, env=env, timeout=60)


@pytest.mark.parametrize("strict", [False, True], ids=["surrogate escapes", "strict utf-8"])
def test_score_names_bytes_that_are_not_utf8_and_scores_the_lines_after_them(strict):
    good = b.sample(7, 0).to_json().encode() + b"\n"
    r = _score(b"\xb5\x00junk\xff\n" + good, strict)
    err = r.stderr.decode(errors="replace")
    assert r.returncode == 1 and "Traceback" not in err, err
    assert err.splitlines() == [
        f"line 1: not UTF-8 text (byte 0xb5 at column 1); give UTF-8 JSON lines like {b.EXAMPLE_LINE}"
    ]
    assert json.loads(r.stdout)["text"] == b.sample(7, 0).text


def test_score_names_a_line_that_is_cut_off_without_doubling_its_words():
    text = b.sample(7, 0).to_json()
    r = _score((text + "\n" + text[:40] + "\n").encode(), strict=True)
    assert r.returncode == 1 and r.stdout.decode().count("\n") == 1
    (line,) = r.stderr.decode().splitlines()
    assert line.startswith("line 2: not JSON (Unterminated string starting at column 10); give one JSON object")
