"""Answer extraction, math-verify scoring, and extract-then-score on reasoning-gym tasks."""

from __future__ import annotations

import threading

import pytest

from rladctl.config import PromptConfig, TaskConfig
from rladctl.tasks.catalog import build_task, score_completion
from rladctl.tasks.verifiers import extract_answer, math_verify_score

PLAIN = PromptConfig()


# --------------------------------------------------------------------------------------------
# extract_answer


@pytest.mark.parametrize(
    "completion, expected",
    [
        ("<answer>42</answer>", "42"),
        ("reasoning... <answer>  \n 42 \t</answer> done", "42"),  # whitespace stripped
        ("<answer>1</answer> wait, no: <answer>2</answer>", "2"),  # the last pair wins
        ("<answer><answer>3</answer>", "3"),  # the last opening tag decides
        ("<answer>1</answer> actually <answer>2", ""),  # last answer truncated: no answer
        ("<answer>42", ""),  # cut at max_new_tokens
        ("the answer is 42", ""),  # no tag
        ("42</answer>", ""),  # closing tag only
        ("<answer></answer>", ""),  # empty answer
        ("<Answer>42</Answer>", ""),  # tags are matched exactly
        ("", ""),
    ],
)
def test_extract_answer(completion, expected):
    assert extract_answer(completion, PLAIN) == expected


def test_extract_answer_sees_the_answer_prefix():
    # The prompt ended in "<answer>", so the completion holds only the answer and the close tag.
    prompt = PromptConfig(answer_prefix="<answer>")
    assert extract_answer(" 7 </answer>", prompt) == "7"
    assert extract_answer("7", prompt) == ""  # still truncated
    assert extract_answer(" 7 </answer>", PLAIN) == ""  # without the prefix there is no opening tag


# --------------------------------------------------------------------------------------------
# math-verify


@pytest.mark.parametrize(
    "gold, answer, expected",
    [
        ("\\frac{1}{2}", "0.5", 1.0),
        ("0.5", "\\frac{1}{2}", 1.0),
        ("1/2", "$\\frac{1}{2}$", 1.0),
        ("x^2+1", "1+x^2", 1.0),  # unanchored, math-verify alone would read "1+x^2" as 1
        ("\\sqrt{2}", "\\sqrt{2}", 1.0),
        ("-14282", "-14282", 1.0),
        ("\\frac{1}{2}", "0.6", 0.0),
        ("\\frac{1}{2}", "blah", 0.0),  # unparseable as a number
        ("1", "1+x^2", 0.0),
        ("42", "", 0.0),
        ("42", "   ", 0.0),
        ("42", "}{", 0.0),  # unbalanced braces: unparseable
    ],
)
def test_math_verify_score(gold, answer, expected):
    assert math_verify_score(gold, answer) == expected


def test_math_verify_score_works_off_the_main_thread():
    # SIGALRM timeouts would raise "signal only works in main thread"; they must be switched off.
    results = []
    worker = threading.Thread(
        target=lambda: results.extend([math_verify_score("\\frac{1}{2}", "0.5"), math_verify_score("2", "3")])
    )
    worker.start()
    worker.join()
    assert results == [1.0, 0.0]


# --------------------------------------------------------------------------------------------
# reasoning-gym scoring, through score_completion (extract first, then score the bare answer)


@pytest.fixture(scope="module")
def knights():
    return build_task(TaskConfig(name="knights_knaves", seed=0, size=4, eval_seed=1000, eval_size=2))


def test_knights_knaves_scores(knights):
    item = knights.items("train", 0, 1)[0]
    assert item.answer == "Victoria is a knight, and Jacob is a knave."
    assert knights.score(item.metadata, item.answer) == 1.0
    # one of two people right: reasoning-gym's partial credit 0.3 + 0.7 * 1/2 = 0.65
    assert knights.score(item.metadata, "Victoria is a knight, and Jacob is a knight.") == pytest.approx(0.65)
    assert knights.score(item.metadata, "Victoria is a knave, and Jacob is a knight.") == 0.0
    # tagged text must be extracted first: scored raw it is not an answer
    tagged = f"I think... <answer>{item.answer}</answer>"
    assert knights.score(item.metadata, tagged) < 1.0
    assert score_completion(knights, item, tagged, PLAIN) == (1.0, item.answer)


def test_chain_sum_scores():
    task = build_task(TaskConfig(name="chain_sum", seed=0, size=3, eval_seed=1000, eval_size=2))
    item = task.items("train", 0, 1)[0]
    assert item.answer == "-14282"  # 1663 - 5242 - 9376 - 8961 + 7634
    assert task.score(item.metadata, "-14282") == 1.0
    assert task.score(item.metadata, "-14283") == 0.0
    assert score_completion(task, item.metadata, "so <answer> -14282 </answer>", PLAIN) == (1.0, "-14282")
    assert score_completion(task, item, "<answer>-14282</answer><answer>0</answer>", PLAIN) == (0.0, "0")


def test_countdown_scores_with_partial_credit():
    task = build_task(TaskConfig(name="countdown", seed=0, size=2, eval_seed=1000, eval_size=1))
    item = task.items("train", 0, 1)[0]
    assert item.answer == "6*(98 - 54) - 34 - 66"  # = 164 with 66, 34, 98, 54, 6
    assert task.score(item.metadata, item.answer) == 1.0
    assert task.score(item.metadata, "66 + 34 + 98 + 54 + 6") == 0.05  # all numbers, wrong value
    assert task.score(item.metadata, "164") == 0.05  # wrong numbers
    assert task.score(item.metadata, "no idea") == 0.01  # not an expression: reasoning-gym's floor
    assert task.score(item.metadata, "") == 0.0  # no answer earns no format credit
    assert score_completion(task, item, f"<answer>{item.answer}</answer>", PLAIN) == (1.0, item.answer)
    assert score_completion(task, item, "I give up", PLAIN) == (0.0, "")


def test_file_task_score_completion(tmp_path):
    path = tmp_path / "math.jsonl"
    path.write_text(
        '{"question": "1/2 as a decimal?", "answer": "\\\\frac{1}{2}"}\n{"question": "q2", "answer": "3"}\n'
    )
    task = build_task(TaskConfig(name="file", path=str(path), eval_size=1))
    item = task.items("train", 0, 1)[0]
    assert item.answer == "\\frac{1}{2}"
    assert score_completion(task, item, "<answer>0.5</answer>", PLAIN) == (1.0, "0.5")
    assert score_completion(task, item, "<answer>blah</answer>", PLAIN) == (0.0, "blah")
    assert score_completion(task, item, "<answer>0.5", PLAIN) == (0.0, "")
