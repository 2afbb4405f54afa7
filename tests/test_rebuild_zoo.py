"""make zoo: the models dealt into lanes that train side by side, each model's card after it."""

import threading

import pytest

from utils.course import rebuild_zoo as rz


def test_the_longest_models_are_dealt_first_each_to_the_least_loaded_lane():
    costs = {"a": 10, "b": 60, "c": 45, "d": 30, "e": 25}
    assert rz.plan_lanes(costs, 2) == [["b", "e"], ["c", "d", "a"]]  # 85 s in each
    assert rz.plan_lanes(costs, 1) == [["b", "c", "d", "e", "a"]]
    assert rz.plan_lanes({"a": 1}, 3) == [["a"]], "no empty lanes"


def test_a_lane_count_below_one_is_refused():
    with pytest.raises(ValueError, match="at least 1, not 0"):
        rz.plan_lanes({"a": 1}, 0)
    with pytest.raises(SystemExit):
        rz.main(["--lanes", "0"])


def test_every_zoo_model_has_an_expected_time_from_its_card():
    from utils.model_zoo.registry import SPECS

    assert all(rz.expected_seconds(name) > 60 for name in SPECS)


def test_lanes_run_side_by_side_with_one_thread_each_and_a_card_after_each_model(tmp_path, monkeypatch):
    monkeypatch.setattr(rz, "LOGS", tmp_path)
    calls, both_running, running = [], threading.Event(), set()

    def fake_run(args, env, log):
        calls.append((log.name, args[1], args[2], env.get("OMP_NUM_THREADS")))
        running.add(log.name)
        if len(running) == 2:
            both_running.set()
        both_running.wait(timeout=5)  # each lane waits until the other has started: they overlap
        return 0

    rows = rz.rebuild_models([["big"], ["small", "tiny"]], run=fake_run)
    assert both_running.is_set()
    lane2 = [(module, name) for log, module, name, _ in calls if log == "lane-2.log"]
    assert lane2 == [
        ("utils.model_zoo.train", "small"),
        ("utils.cards.model_cards", "small"),
        ("utils.model_zoo.train", "tiny"),
        ("utils.cards.model_cards", "tiny"),
    ]
    assert {threads for *_, threads in calls} == {"1"}
    assert len(rows) == 6 and all(r["exit"] == 0 for r in rows)


def test_a_failed_training_run_ends_its_lane_and_no_card_is_measured_for_it(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(rz, "LOGS", tmp_path)
    calls = []

    def fake_run(args, env, log):
        calls.append((args[1], args[2]))
        return 1 if args[2] == "broken" else 0

    rows = rz.rebuild_models([["broken", "after"]], run=fake_run)
    assert calls == [("utils.model_zoo.train", "broken")]
    assert rows[0]["exit"] == 1 and "FAILED" in capsys.readouterr().out
    assert rz.lane_environment(1).get("OMP_NUM_THREADS") == __import__("os").environ.get("OMP_NUM_THREADS")


def test_the_readme_names_the_thread_count_each_committed_model_was_trained_with():
    import json
    import re

    from utils.model_zoo.models import zoo
    from utils.paths import MODELS, README

    text = " ".join(README.read_text().split())
    clause = re.search(r"two for (.+?), one for (.+?)\. ", text)
    assert clause, "the README's rebuilding section names the threads behind the committed weights"
    named = {"2 threads": clause.group(1), "1 thread": clause.group(2)}
    for name in zoo():
        threads = json.loads((MODELS / name / "card.json").read_text())["training"]["device"].split(", ")[-1]
        assert f"`{name}`" in named[threads], (name, threads)


def test_the_readme_and_the_makefile_quote_the_recorded_rebuild_time():
    import json

    from utils.paths import BENCHMARKS, README, ROOT

    record = json.loads((BENCHMARKS / "zoo_rebuild.json").read_text())
    total, models = round(record["total_seconds"] / 60), round(record["models_seconds"] / 60)
    longer_lane = max(sum(r["seconds"] for r in record["steps"] if r["lane"] == k) for k in (1, 2))
    assert longer_lane == pytest.approx(record["models_seconds"], abs=5), "the models' time is the longer lane's"
    text = " ".join(README.read_text().split())
    assert f"took **{total} min**" in text and f"{models} min in the two lanes" in text
    makefile = (ROOT / "Makefile").read_text()
    assert f"{total} min" in makefile and f"models {models} min" in makefile


def test_make_zoo_replaces_the_zoo_models_and_saes_by_name():
    assert rz.model_steps("storyworld-4l")[0] == ["-m", "utils.model_zoo.train", "storyworld-4l", "--replace-zoo-model"]
    assert ["-m", "utils.model_zoo.saes", "all", "--replace-zoo-sae"] in rz.SAE_STEPS
