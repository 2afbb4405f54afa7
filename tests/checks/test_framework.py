"""The shared machinery behind every exercise check."""

import numpy as np
import pytest
import torch

from utils.checks.framework import (
    CheckFailed,
    as_number,
    call,
    expect_close,
    expect_number,
    expect_tensor,
    two_steps,
)
from utils.checks.lesson00_orientation import check_mean_loss
from utils.checks.lesson01_induction_heads import _attention_pattern as attention_pattern
from utils.checks.lesson01_induction_heads import check_attention_pattern, check_previous_token_scores
from utils.checks.lesson05_steering import check_steering_vector
from utils.metrics.heads import previous_token_scores
from utils.metrics.loss import per_token_loss
from utils.metrics.steering import steering_vector


def stub(x):
    raise NotImplementedError("do the thing")


def test_an_untouched_stub_gets_a_sentence_not_a_traceback():
    with pytest.raises(CheckFailed, match="still the stub"):
        call(stub, torch.zeros(2))


def test_errors_inside_the_learners_code_are_summarised():
    def bad(x):
        return x @ torch.zeros(5, 5)

    with pytest.raises(CheckFailed, match="`bad` raised RuntimeError"):
        call(bad, torch.zeros(2, 3))


def test_in_place_changes_to_inputs_are_caught():
    def mutate(x):
        x *= 2
        return x

    with pytest.raises(CheckFailed, match="changed its input tensor"):
        call(mutate, torch.ones(3))


def test_wrong_shape_names_the_dimension():
    with pytest.raises(CheckFailed, match=r"dimension 1 \(query\) is 4 but should be 5"):
        expect_tensor(torch.zeros(2, 4, 5), (2, 5, 5), ["head", "query", "key"], "f")


def test_wrong_rank_dtype_nan_and_type_are_named():
    with pytest.raises(CheckFailed, match="3 dimensions"):
        expect_tensor(torch.zeros(2, 4, 5), (2, 4), ["a", "b"], "f")
    with pytest.raises(CheckFailed, match="dtype torch.int64"):
        expect_tensor(torch.zeros(3, dtype=torch.long), (3,), ["a"], "f")
    with pytest.raises(CheckFailed, match="NaN"):
        expect_tensor(torch.tensor([1.0, float("nan")]), (2,), ["a"], "f")
    with pytest.raises(CheckFailed, match="torch.Tensor"):
        expect_tensor([1.0], (1,), ["a"], "f")


def test_known_wrong_answers_get_their_own_message():
    ref = torch.tensor([1.0, 2.0])
    wrong = torch.tensor([2.0, 1.0])
    with pytest.raises(CheckFailed, match="reversed"):
        expect_close(wrong, ref, "f", hints=[(wrong, "reversed")])
    with pytest.raises(CheckFailed, match="expected 1"):
        expect_close(torch.tensor([5.0, 2.0]), ref, "f")
    expect_close(ref + 1e-6, ref, "f")


def test_numbers_are_compared_with_a_tolerance():
    assert expect_number(torch.tensor(1.0), 1.05, "f", "loss", 0.1) == 1.0
    with pytest.raises(CheckFailed, match="loss = 2"):
        expect_number(2.0, 1.0, "f", "loss", 0.1)
    with pytest.raises(CheckFailed, match="should return a number"):
        expect_number("1", 1.0, "f", "loss", 0.1)


def test_check_failures_render_as_one_line_in_ipython():
    lines = CheckFailed("your pattern rows don't sum to 1")._render_traceback_()
    assert len(lines) == 1 and "sum to 1" in lines[0]


def test_a_check_names_the_mistake_first_and_gives_the_fix_on_the_second_failure():
    message = "masked scores set to 0 still get weight after the softmax: fill them with -inf instead."
    first = CheckFailed(message)._render_traceback_()
    assert "still get weight after the softmax" in first[0] and "-inf" not in " ".join(first)
    assert "once more" in first[1]
    again = CheckFailed(message)._render_traceback_()
    assert again == [f"\x1b[1;31m✗ {message}\x1b[0m"]
    assert str(CheckFailed(message)) == message  # tests and logs always get the whole message


@pytest.mark.parametrize(
    "message, what, fix",
    [
        (
            "you read the prediction at the first position; the next token is predicted at the last (logits[0, -1]).",
            "you read the prediction at the first position.",
            "The next token is predicted at the last (logits[0, -1]).",
        ),
        (
            "no shift: the logits at position t predict token t+1 (use logits[:, :-1] with tokens[:, 1:]).",
            "no shift: the logits at position t predict token t+1.",
            "Use logits[:, :-1] with tokens[:, 1:].",
        ),
        (
            "`f` returned 3 NaN or infinite value(s). Look for a division by zero, e.g. a log of zero.",
            "`f` returned 3 NaN or infinite value(s).",
            "Look for a division by zero, e.g. a log of zero.",
        ),
    ],
)
def test_a_message_splits_into_what_is_wrong_and_how_to_fix_it(message, what, fix):
    assert two_steps(message) == (what, fix)


@pytest.mark.parametrize(
    "message",
    [
        "`f` is still the stub: replace the `raise NotImplementedError(...)` line with your code, then run this again.",
        "`f` gives the wrong values: at index [1, 2] you have 0.5, expected 0.25 (10% of entries differ).",
        "returned shape (7, 3, 7): dimension 0 (head) is 7 but should be 3. Expected [head, query, key] = (3, 7, 7).",
    ],
)
def test_a_message_with_nothing_to_give_away_is_shown_whole_at_once(message):
    assert two_steps(message) == (message, "")
    assert CheckFailed(message)._render_traceback_() == [f"\x1b[1;31m✗ {message}\x1b[0m"]


def test_a_hook_may_edit_in_place_when_the_check_allows_it():
    def zero_first(x):
        x[0] = 0.0

    x = torch.ones(3)
    assert call(zero_first, x, in_place_ok=True) is None
    assert x.tolist() == [0.0, 1.0, 1.0]
    with pytest.raises(CheckFailed, match="changed its input tensor"):
        call(zero_first, torch.ones(3))


def test_an_expected_exception_gets_its_likely_cause():
    def overrun(x):
        return x[10]

    with pytest.raises(CheckFailed, match=r"raised IndexError: .* Use the argument"):
        call(overrun, torch.zeros(3), explain={IndexError: "Use the argument."})
    with pytest.raises(CheckFailed, match=r"raised IndexError: [^.]*\.?$"):
        call(overrun, torch.zeros(3), explain={KeyError: "Use the argument."})


def _scores(p):
    return previous_token_scores(p)


def _loss(logits, tokens):
    return per_token_loss(logits, tokens).mean()


@pytest.mark.parametrize(
    "check, right",
    [(check_previous_token_scores, _scores), (check_mean_loss, _loss), (check_steering_vector, steering_vector)],
    ids=["tensor", "number", "vector"],
)
def test_a_tensor_on_the_meta_device_is_named_in_one_sentence(check, right):
    def on_meta(*args):
        return right(*args).to("meta")

    with pytest.raises(CheckFailed, match="on the meta device, which holds no values") as e:
        check(on_meta)
    assert "\n" not in str(e.value)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize(
    "check, right",
    [
        (check_previous_token_scores, _scores),
        (check_attention_pattern, attention_pattern),
        (check_mean_loss, _loss),
        (check_steering_vector, steering_vector),
    ],
    ids=["tensor", "masked", "number", "vector"],
)
def test_a_right_answer_on_the_gpu_passes_a_check_that_gave_cpu_tensors(check, right, capsys):
    def on_gpu(*args):
        return right(*args).cuda()

    check(on_gpu)
    assert "✓" in capsys.readouterr().out


@pytest.mark.parametrize("kind", [np.float32, np.float64, np.array])
def test_a_numpy_number_is_a_number(kind, capsys):
    def as_numpy(logits, tokens):
        return kind(_loss(logits, tokens).item())

    check_mean_loss(as_numpy)
    assert "✓" in capsys.readouterr().out
    assert expect_number(kind(2.5), 2.5, "f", "x", 1e-6) == 2.5 and as_number(kind(2.5)) == 2.5
    with pytest.raises(CheckFailed, match="should return a number"):
        expect_number(np.array([2.5, 1.0]), 2.5, "f", "x", 1e-6)


def test_a_sparse_tensor_is_compared_as_the_dense_one_and_a_nested_one_is_named(capsys):
    def sparse(p):
        return _scores(p).to_sparse()

    check_previous_token_scores(sparse)
    assert "✓" in capsys.readouterr().out

    def nested(p):
        return torch.nested.nested_tensor([_scores(p)], layout=torch.jagged)

    with pytest.raises(CheckFailed, match="nested tensor") as e:
        check_previous_token_scores(nested)
    assert "\n" not in str(e.value)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_a_result_on_the_device_of_the_model_the_check_gave_stays_there():
    model = torch.nn.Linear(2, 2).cuda()

    def forward(model, x):
        return model(x)

    assert call(forward, model, torch.zeros(1, 2, device="cuda")).device.type == "cuda"
    assert call(forward, model, torch.zeros(1, 2).cuda()).is_cuda
    assert call(lambda x: (x * 2).cuda(), torch.ones(2)).device.type == "cpu", "inputs on the CPU: compared there"
    assert [t.device.type for t in call(lambda x: (x.cuda(), x), torch.ones(2))] == ["cpu", "cpu"]


def test_later_cells_run_on_the_learners_function_once_it_passed_and_on_the_reference_otherwise(capsys):
    from utils.checks.framework import passed, yours_or_reference

    def reference(x):
        return 2 * x

    def double(x):
        return x + x

    assert yours_or_reference(double, reference) is reference
    assert "Your `double` has not passed its check" in capsys.readouterr().out
    passed("double", fn=double)
    capsys.readouterr()
    assert yours_or_reference(double, reference) is double
    assert capsys.readouterr().out == "", "a function that passed is used without a word"

    def double(x):  # noqa: F811 - the learner edits the function after its check passed
        return x * 3

    assert yours_or_reference(double, reference) is reference
    said = capsys.readouterr().out
    assert "was defined again after it passed its check" in said and said.count("\n") == 1
