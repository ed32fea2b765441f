"""From a completion to a reward: answer extraction and the math-verify checker.

Task-specific scoring (reasoning-gym's ``score_answer``) lives with the tasks in
``rladctl.tasks``; this module holds what every task shares. math_verify is imported lazily so
that the CLI's ``--help`` stays fast.
"""

from __future__ import annotations

import threading

from rladctl.config import PromptConfig

OPEN_TAG = "<answer>"
CLOSE_TAG = "</answer>"


def extract_answer(completion: str, prompt: PromptConfig) -> str:
    """The final answer in ``prompt.answer_prefix + completion``, or "" when there is none.

    The LAST ``<answer>`` opening tag decides: the answer is what lies between it and the next
    ``</answer>``, stripped of surrounding whitespace. When that last opening tag is never closed
    (the completion was cut at max_new_tokens while the model was writing, or revising, its
    answer) the result is "" even if an earlier pair was complete: a half-written final answer is
    not an answer, and falling back to an earlier one would reward a revision the model abandoned.
    No tag at all gives "". Tags are matched exactly (lower case, no spaces), as the default
    instruction spells them. The prefix is prepended because a prompt that ends in ``<answer>``
    leaves only the answer and the closing tag to the completion.
    """
    text = prompt.answer_prefix + completion
    start = text.rfind(OPEN_TAG)
    if start < 0:
        return ""
    start += len(OPEN_TAG)
    end = text.find(CLOSE_TAG, start)
    if end < 0:
        return ""
    return text[start:end].strip()


def math_verify_score(gold: str, answer: str) -> float:
    """1.0 when math-verify finds ``answer`` equal to ``gold`` (1/2 = 0.5 = \\frac{1}{2}), else 0.0.

    Both sides are wrapped in ``\\boxed{...}`` before parsing: the strings are bare answers taken
    from between tags, and without an anchor math-verify reads "1+x^2" as 1. Anything that cannot
    be parsed, and any error or timeout, scores 0.0. math-verify times out with SIGALRM, which only
    the main thread may use, so timeouts are switched off in other threads.
    """
    if not answer.strip() or not gold.strip():
        return 0.0
    from math_verify import parse, verify
    from math_verify.errors import TimeoutException

    timeout = 5 if threading.current_thread() is threading.main_thread() else None
    try:
        gold_parsed = parse(_boxed(gold), parsing_timeout=timeout)
        answer_parsed = parse(_boxed(answer), parsing_timeout=timeout)
        if not gold_parsed or not answer_parsed:
            return 0.0
        return 1.0 if verify(gold_parsed, answer_parsed, timeout_seconds=timeout) else 0.0
    except (Exception, TimeoutException):  # TimeoutException derives from BaseException
        return 0.0


def math_verify_version() -> str:
    from importlib.metadata import version

    return f"math_verify=={version('math-verify')}"


def _boxed(text: str) -> str:
    text = text.strip()
    if len(text) >= 2 and text[0] == text[-1] == "$":
        text = text.strip("$").strip()
    return text if text.startswith("\\boxed{") else f"\\boxed{{{text}}}"
