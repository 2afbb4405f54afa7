"""Storyworld: determinism, exact log-probabilities, annotations, emotions, command line."""

import hashlib
import json
import math
import re
import subprocess
import sys
from collections import Counter

import pytest

from utils.corpora import storyworld as sw
from utils.paths import ROOT

DOCS = sw.sample_docs(4242, 600)


def stream_digest(seed: int, n: int) -> str:
    return hashlib.sha256("".join(d.to_json() + "\n" for d in sw.sample_docs(seed, n)).encode()).hexdigest()


def test_same_seed_gives_identical_documents():
    assert [d.to_json() for d in sw.sample_docs(5, 50)] == [d.to_json() for d in sw.sample_docs(5, 50)]


def test_different_seeds_give_different_documents():
    assert [d.text for d in sw.sample_docs(5, 20)] != [d.text for d in sw.sample_docs(6, 20)]


def test_document_i_does_not_depend_on_how_many_are_sampled():
    assert sw.sample_docs(5, 10, start=7)[0].to_json() == sw.sample(5, 7).to_json()


def test_output_is_byte_identical_to_the_recorded_stream():
    # Recorded when the generator was written; any change to the generator, the RNG or the
    # JSON layout changes it. If you change Storyworld on purpose, retrain the zoo and
    # update this digest.
    assert stream_digest(0, 200) == GOLDEN_DIGEST


def test_command_line_output_is_byte_identical_across_runs():
    cmd = [sys.executable, "-m", "utils.corpora.storyworld", "sample", "--seed", "3", "--n", "20"]
    a = subprocess.run(cmd, capture_output=True, cwd=ROOT, check=True).stdout
    b = subprocess.run(cmd, capture_output=True, cwd=ROOT, check=True).stdout
    assert a == b and a.count(b"\n") == 20
    rows = [json.loads(line) for line in a.decode().splitlines()]
    assert {"text", "family", "annotations", "logprob"} <= set(rows[0])
    assert rows == [json.loads(d.to_json()) for d in sw.sample_docs(3, 20)]


@pytest.mark.parametrize(
    "args",
    [
        ["sample", "--seed", "x", "--n", "3"],
        ["sample", "--seed", "1", "--n", "0"],
        ["sample", "--seed", "1"],
        ["sample", "--seed", "1", "--n", "2", "--family", "poetry"],
        ["bake"],
        [],
    ],
)
def test_bad_command_line_arguments_print_usage_and_exit_2(args):
    r = subprocess.run(
        [sys.executable, "-m", "utils.corpora.storyworld", *args], capture_output=True, text=True, cwd=ROOT
    )
    assert r.returncode == 2
    assert "usage:" in r.stderr


def test_family_option_samples_only_that_family():
    for fam in sw.FAMILIES:
        docs = sw.sample_docs(8, 30, fam)
        assert {d.family for d in docs} == {fam}
        for d in docs[:5]:  # logprob is still under the whole mixture
            assert d.logprob == pytest.approx(d.logprob_in_family + math.log(sw.FAMILIES[fam]))


def test_rescoring_the_text_gives_the_same_logprob_and_annotations():
    for d in DOCS:
        r = sw.score(d.text)
        assert r.family == d.family
        assert r.logprob == d.logprob
        assert r.annotations == d.annotations


def test_scoring_with_the_family_known_gives_the_same_doc_and_rejects_other_families():
    for d in DOCS[:40]:
        assert sw.score(d.text, family=d.family) == sw.score(d.text)
        other = next(f for f in sw.FAMILIES if f != d.family)
        with pytest.raises(sw.ParseError):
            sw.score(d.text, family=other)
    with pytest.raises(ValueError, match="unknown family"):
        sw.score(DOCS[0].text, family="poem")


def test_score_command_reads_json_lines():
    lines = "".join(d.to_json() + "\n" for d in DOCS[:5])
    r = subprocess.run(
        [sys.executable, "-m", "utils.corpora.storyworld", "score"],
        input=lines,
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=True,
    )
    got = [json.loads(x)["logprob"] for x in r.stdout.splitlines()]
    assert got == [d.logprob for d in DOCS[:5]]


def test_score_command_names_a_cut_off_json_line_without_a_doubled_at():
    r = subprocess.run(
        [sys.executable, "-m", "utils.corpora.storyworld", "score"],
        input=b'{"text": "Ann was in\n',
        capture_output=True,
        cwd=ROOT,
    )
    err = r.stderr.decode()
    assert r.returncode == 1
    assert "line 1: not JSON (Unterminated string starting at column 10);" in err
    assert "at at" not in err


@pytest.mark.parametrize(
    "edit",
    [
        lambda t: t + " Ann smiled.",  # goes on after a document ends... or parses
        lambda t: t.replace(".", "!", 1),
        lambda t: t[:-1],
        lambda t: "Hello world.",
    ],
)
def test_texts_that_are_not_storyworld_documents_are_rejected(edit):
    rejected = 0
    for d in DOCS[:40]:
        text = edit(d.text)
        try:
            r = sw.score(text)
        except sw.ParseError:
            rejected += 1
            continue
        # Whatever still parses must be a genuinely different, fully consistent derivation.
        assert r.text == text and r.logprob != d.logprob
    assert rejected >= 1


def test_swapping_the_ioi_answer_is_rejected():
    d = next(d for d in DOCS if d.family == "transfer")
    a = d.annotations
    s, e = a["transfers"][0]["answer_span"]
    wrong = d.text[:s] + a["distractor"] + d.text[e:]
    with pytest.raises(sw.ParseError):
        sw.score(wrong)


def test_logprobs_are_negative_and_finite():
    assert all(math.isfinite(d.logprob) and d.logprob < 0 for d in DOCS)


def test_every_family_appears_in_roughly_its_proportion():
    counts = Counter(d.family for d in DOCS)
    for fam, p in sw.FAMILIES.items():
        assert abs(counts[fam] / len(DOCS) - p) < 0.07


def test_character_spans_point_at_the_names():
    n = 0
    for d in DOCS:
        for c in d.annotations["characters"]:
            assert c["name"] in sw.NAMES
            for s, e in c["spans"]:
                assert d.text[s:e] == c["name"]
                assert s == 0 or not d.text[s - 1].isalnum()
                n += 1
    assert n > 1000


def test_every_name_occurrence_is_annotated():
    import re

    for d in DOCS:
        spans = {(s, e) for c in d.annotations["characters"] for s, e in c["spans"]}
        for m in re.finditer(r"\b(" + "|".join(sw.NAMES) + r")\b", d.text):
            assert (m.start(), m.end()) in spans, (d.text, m.group())


def test_transfer_annotations_give_prompt_answer_and_distractor():
    docs = [d for d in DOCS if d.family == "transfer"]
    assert docs
    for d in docs:
        a = d.annotations
        prompt = d.text[: a["prompt_end"]]
        assert prompt.endswith(" to")
        assert d.text[a["prompt_end"] :].startswith(" " + a["answer"] + ".")
        assert a["answer"] != a["distractor"]
        # Both names were introduced; the distractor is the subject who gives.
        first = a["transfers"][0]
        clause = d.text[first["span"][0] : a["prompt_end"]]
        assert clause.count(a["answer"]) == 1 and clause.count(a["distractor"]) == 2


def test_repeated_spans_are_verbatim_copies_at_varying_periods_and_distances():
    reps = [r for d in DOCS for r in d.annotations.get("repeats", [])]
    for d in DOCS:
        for r in d.annotations.get("repeats", []):
            a, b = r["first"]
            c, e = r["repeat"]
            assert d.text[a:b] == d.text[c:e] and c > b
    assert len({r["items"] for r in reps}) >= 6
    assert len({r["fillers_between"] for r in reps}) >= 3
    assert {r["kind"] for r in reps} == {"list", "line", "rhyme", "song"}
    assert all(r["kind"] == "song" for d in DOCS if d.family == "song" for r in d.annotations["repeats"])


def test_a_song_repeats_at_once_with_nothing_around_or_between_the_copies():
    songs = [d for d in DOCS if d.family == "song"]
    assert len(songs) >= 10
    for d in songs:
        (r,) = d.annotations["repeats"]
        (a, b), (c, e) = r["first"], r["repeat"]
        assert a == 0 and c == b + 1 and d.text[b] == " " and d.text == d.text[a:b] + " " + d.text[c:e] + "."
        words = d.text[a:b].split()
        assert len(words) == len(set(words)) == r["items"] >= 4


def test_sentence_spans_cover_the_narrative_text():
    for d in DOCS:
        if d.family != "narrative":
            continue
        sents = d.annotations["sentences"]
        joined = " ".join(d.text[s["span"][0] : s["span"][1]] for s in sents)
        assert joined == d.text


def test_emotions_sit_on_a_circle_30_degrees_apart():
    assert len(sw.EMOTIONS) == 12 and len(set(sw.EMOTIONS)) == 12
    for k, e in enumerate(sw.EMOTIONS):
        assert sw.emotion_angle(e) == 30 * k
    for d in DOCS:
        for s in d.annotations.get("sentences", []):
            if "emotion" in s:
                th = math.radians(s["angle"])
                assert s["valence"] == pytest.approx(math.cos(th), abs=1e-6)
                assert s["arousal"] == pytest.approx(math.sin(th), abs=1e-6)
                assert s["feelings"][s["subject"]] == s["emotion"]


def test_most_narrative_sentences_show_the_emotion_without_naming_it():
    sents = [s for d in DOCS for s in d.annotations.get("sentences", []) if "emotion" in s]
    unnamed = [s for s in sents if not s["names_emotion"]]
    assert len(unnamed) / len(sents) > 0.5
    texts = {
        d.text[s["span"][0] : s["span"][1]]
        for d in DOCS
        for s in d.annotations.get("sentences", [])
        if "emotion" in s and not s["names_emotion"]
    }
    assert not any(e in t.split() or e + "." in t.split() for t in texts for e in sw.EMOTIONS)


def test_feelings_drift_only_to_neighbouring_emotions():
    for d in DOCS:
        last = {}
        for s in d.annotations.get("sentences", []):
            if s["kind"] == "feeling" and s["subject"] in last:
                step = (s["angle"] - last[s["subject"]]) % 360
                assert step in (0, 30, 330)
            if "emotion" in s:
                last[s["subject"]] = s["angle"]


def test_behaviour_words_depend_on_valence_and_arousal():
    docs = sw.sample_docs(77, 3000, "narrative")
    by_valence, by_arousal = Counter(), Counter()
    for d in docs:
        for s in d.annotations["sentences"]:
            if s["kind"] == "behaviour":
                words = d.text[s["span"][0] : s["span"][1]].rstrip(".!").split()
                by_valence[(words[1], s["valence"] > 0.1)] += 1
                by_arousal[(words[2], s["arousal"] > 0.1)] += 1
    assert by_valence[("smiled", True)] > 3 * by_valence[("smiled", False)]
    assert by_valence[("groaned", False)] > 3 * by_valence[("groaned", True)]
    assert by_arousal[("eagerly", True)] > 3 * by_arousal[("eagerly", False)]
    assert by_arousal[("drowsily", False)] > 3 * by_arousal[("drowsily", True)]


def test_behaviour_words_tell_neighbouring_emotions_apart():
    # The lessons' emotion probe needs a reader to track the exact emotion, not just its
    # quadrant: each emotion's own behaviour word must beat its neighbours' by a wide margin.
    docs = sw.sample_docs(78, 3000, "narrative")
    counts = Counter()
    for d in docs:
        for s in d.annotations["sentences"]:
            if s["kind"] == "behaviour":
                counts[(s["emotion"], d.text[s["span"][0] : s["span"][1]].split()[1])] += 1
    for k, (word, _angle) in enumerate(sw.BEHAVIOURS):
        own = counts[(sw.EMOTIONS[k], word)]
        for n in (k - 1, (k + 1) % 12):
            assert own > 1.5 * counts[(sw.EMOTIONS[n], word)], (word, sw.EMOTIONS[n])


def _endings_and_objects(seed: int, n: int):
    """(emotion, ending) for every sentence that shows a feeling, (emotion, object) for
    every object sentence."""
    endings, objects = Counter(), Counter()
    for d in sw.sample_docs(seed, n, "narrative"):
        for s in d.annotations["sentences"]:
            if s["kind"] in ("behaviour", "object", "speech"):
                text = d.text[s["span"][0] : s["span"][1]].rstrip('"')
                end = text[len(text.rstrip(".!")) :]
                endings[(s["emotion"], end)] += 1
            if s["kind"] == "object":
                objects[(s["emotion"], next(o for o in sw.OBJECTS if f" {o} " in text))] += 1
    return endings, objects


def test_sentence_endings_depend_on_the_exact_emotion():
    # The last word of a sentence is followed by its punctuation; that choice depends on the
    # feeling, so a reader has a reason to keep the feeling in mind up to the end.
    endings, _ = _endings_and_objects(79, 3000)
    share = {
        e: {p: endings[(e, p)] / sum(endings[(e, q)] for q, _ in sw.ENDINGS) for p, _ in sw.ENDINGS}
        for e in sw.EMOTIONS
    }
    for p, angle in sw.ENDINGS:  # each ending is most common at its preferred angle
        assert max(sw.EMOTIONS, key=lambda e: share[e][p]) == sw.EMOTIONS[angle // 30]
    for k, e in enumerate(sw.EMOTIONS):  # neighbours end their sentences differently
        n = sw.EMOTIONS[(k + 1) % 12]
        assert sum(abs(share[e][p] - share[n][p]) for p, _ in sw.ENDINGS) > 0.1, (e, n)


def test_the_object_picked_up_leans_on_the_feeling():
    _, objects = _endings_and_objects(80, 3000)
    for i, o in enumerate(sw.OBJECTS):
        nearest = sw.EMOTIONS[round(22.5 * i / 30) % 12]
        opposite = sw.EMOTIONS[(round(22.5 * i / 30) + 6) % 12]
        assert objects[(nearest, o)] > 3 * objects[(opposite, o)], o


def test_an_ellipsis_or_a_double_bang_is_one_choice():
    doc = next(d for d in sw.sample_docs(81, 200, "narrative") if "..." in d.text)
    assert sw.score(doc.text).logprob == pytest.approx(doc.logprob, abs=1e-9)
    for broken in ("..", ". .", ".!"):
        with pytest.raises(sw.ParseError):
            sw.score(doc.text.replace("...", broken, 1))
    loud = next(d for d in sw.sample_docs(81, 200, "narrative") if "!!" in d.text)
    assert sw.score(loud.text).logprob == pytest.approx(loud.logprob, abs=1e-9)


GOLDEN_DIGEST = "4c79f7bc5b8067127d1778fd49a691a69d70ed8401541da30ac4c145c6aebee1"


def test_words_are_exactly_the_words_the_families_write_after_a_space():
    seen = set()
    for family in ("narrative", "transfer", "repetition"):
        for d in sw.sample_docs(seed=123, n=1500, family=family):
            seen.update(re.findall(r"(?<= )[A-Za-z]+(?![A-Za-z])", d.text))
    missing, unused = sorted(seen - set(sw.WORDS)), sorted(set(sw.WORDS) - seen)
    assert not missing and not unused, f"write these into FRAME_WORDS: {missing}; no family writes: {unused}"
    assert set(sw.CONTENT_WORDS) < set(sw.WORDS)
    assert not set(sw.FRAME_WORDS) & set(sw.CONTENT_WORDS), "a frame word is also a content word"


def test_every_song_word_is_a_storyworld_word():
    assert set(sw.SONG_WORDS) <= set(sw.WORDS)
