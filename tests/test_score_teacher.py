"""score-teacher: exact teacher log-probs and top-k, input rows kept in order, resume, refusals."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest
import torch
from conftest import TASK_SETS, run_cli, sets

from rladctl.config import load_recipe
from rladctl.store import schema as S
from rladctl.store.artifacts import MANIFEST, open_artifact

# Small micro-batches put a few rows in each forward pass, so the length bucketing reorders rows
# and pads them; small chunks make the log-prob chunking ragged.
SMALL_BATCHES = ["score_teacher.micro_batch_tokens=48", "score_teacher.chunk_tokens=7"]


@pytest.fixture(scope="module")
def rollouts(models, tmp_path_factory) -> Path:
    """32 student rollouts at temperature 1 in 4 parts."""
    from rladctl.stages.rollout import run_rollout

    out = tmp_path_factory.mktemp("score") / "rollouts"
    run_rollout(
        load_recipe(
            None,
            TASK_SETS
            + [
                f'rollout.model="{models["student"]}"',
                f'rollout.out="{out}"',
                "rollout.num_prompts=8",
                "rollout.group_size=4",
                "rollout.max_new_tokens=12",
                "rollout.prompts_per_part=2",
            ],
        )
    )
    return out


def score(teacher: Path, inp: Path, out: Path, *extra: str, overwrite: bool = False):
    from rladctl.stages.score_teacher import run_score_teacher

    recipe = load_recipe(
        None,
        [f'score_teacher.teacher="{teacher}"', f'score_teacher.input="{inp}"', f'score_teacher.out="{out}"', *extra],
    )
    return run_score_teacher(recipe, overwrite=overwrite)


def naive_logp(model, prompt: list[int], completion: list[int], temperature: float) -> torch.Tensor:
    """Full-vocabulary reference: one unpadded forward pass, log_softmax(logits / T), [T, V]."""
    with torch.no_grad():
        logits = model(torch.tensor([prompt + completion])).logits[0].float() / temperature
    return torch.log_softmax(logits, -1)[len(prompt) - 1 : len(prompt) - 1 + len(completion)]


def load_hf(path: Path):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()


def dir_digest(path: Path) -> dict[str, tuple[str, int]]:
    return {p.name: (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns) for p in sorted(path.iterdir())}


def test_same_model_as_teacher_reproduces_the_sampler_logprobs(models, rollouts, tmp_path):
    before = dir_digest(rollouts)
    summary = score(models["student"], rollouts, tmp_path / "s", *SMALL_BATCHES)
    assert dir_digest(rollouts) == before  # input untouched, not even re-written
    table = open_artifact(tmp_path / "s", [S.SCORED]).table()
    assert summary.rows == table.num_rows == 32 and summary.completion_tokens > 32
    worst = 0.0
    for teacher, sampler in zip(table[S.TEACHER_LOGPROBS].to_pylist(), table[S.SAMPLER_LOGPROBS].to_pylist()):
        assert len(teacher) == len(sampler) > 0
        worst = max(worst, float((torch.tensor(teacher) - torch.tensor(sampler)).abs().max()))
    assert worst < 1e-4, worst
    assert abs(summary.student_minus_teacher_mean) < 1e-4


@pytest.mark.parametrize("temperature", [1.0, 2.0])
def test_different_teacher_equals_a_naive_full_softmax(models, rollouts, tmp_path, temperature):
    score(models["teacher"], rollouts, tmp_path / "s", *SMALL_BATCHES, f"score_teacher.temperature={temperature}")
    manifest = json.loads((tmp_path / "s" / MANIFEST).read_text())
    assert manifest["scoring"]["temperature"] == manifest["config"]["temperature"] == temperature
    assert manifest["teacher"]["weights_hash"] and manifest["kind"] == S.SCORED
    model = load_hf(models["teacher"])
    table = open_artifact(tmp_path / "s", [S.SCORED]).table()
    worst, sampler_gap = 0.0, 0.0
    for prompt, completion, teacher, sampler in zip(
        *(
            table[c].to_pylist()
            for c in (S.PROMPT_TOKEN_IDS, S.COMPLETION_TOKEN_IDS, S.TEACHER_LOGPROBS, S.SAMPLER_LOGPROBS)
        )
    ):
        ref = (
            naive_logp(model, prompt, completion, temperature).gather(-1, torch.tensor(completion)[:, None]).squeeze(-1)
        )
        worst = max(worst, float((ref - torch.tensor(teacher)).abs().max()))
        sampler_gap = max(sampler_gap, float((torch.tensor(sampler) - torch.tensor(teacher)).abs().max()))
    assert worst < 1e-5, worst
    assert sampler_gap > 1e-2  # really another model's numbers, not the student's copied through


def test_top_k_equals_torch_topk_of_the_full_softmax(models, rollouts, tmp_path):
    k = 5
    score(
        models["teacher"],
        rollouts,
        tmp_path / "s",
        *SMALL_BATCHES,
        f"score_teacher.top_k={k}",
        "score_teacher.temperature=0.8",
    )
    model = load_hf(models["teacher"])
    table = open_artifact(tmp_path / "s", [S.SCORED]).table()
    assert json.loads((tmp_path / "s" / MANIFEST).read_text())["scoring"]["top_k"] == k
    same_ids = []
    for prompt, completion, teacher, ids, lps in zip(
        *(
            table[c].to_pylist()
            for c in (
                S.PROMPT_TOKEN_IDS,
                S.COMPLETION_TOKEN_IDS,
                S.TEACHER_LOGPROBS,
                S.TEACHER_TOPK_IDS,
                S.TEACHER_TOPK_LOGPROBS,
            )
        )
    ):
        logp_TV = naive_logp(model, prompt, completion, 0.8)
        ref_values, ref_ids = logp_TV.topk(k, dim=-1)  # [T, k]
        ids_Tk, lps_Tk = torch.tensor(ids), torch.tensor(lps)
        assert ids_Tk.shape == lps_Tk.shape == (len(completion), k)
        torch.testing.assert_close(lps_Tk, ref_values, atol=1e-5, rtol=0)
        # The stored ids carry the stored values (robust to near-ties swapping equal-valued ids).
        torch.testing.assert_close(logp_TV.gather(-1, ids_Tk.long()), lps_Tk, atol=1e-5, rtol=0)
        assert all(len(set(row)) == k for row in ids)
        # The sampled token's log-prob is bounded by the best one.
        assert (torch.tensor(teacher) <= lps_Tk[:, 0] + 1e-6).all()
        same_ids += (ref_ids == ids_Tk).flatten().tolist()
    assert sum(same_ids) / len(same_ids) > 0.99  # the ids themselves match torch.topk's, ties aside


def test_rows_keep_the_input_order_and_parts(models, rollouts, tmp_path):
    """Length bucketing scores rows out of order; the output must put them back."""
    from rladctl.backends.logprobs import pass_overhead_tokens, tight_length_buckets
    from rladctl.config import ScoreTeacherConfig

    score(models["teacher"], rollouts, tmp_path / "s", *SMALL_BATCHES)
    source, scored = open_artifact(rollouts, [S.ROLLOUTS]), open_artifact(tmp_path / "s", [S.SCORED])
    assert scored.rows == source.rows == 32
    assert [p["rows"] for p in scored.manifest["parts"]] == [p["rows"] for p in source.manifest["parts"]]
    reordered = 0
    for index in range(len(source.manifest["parts"])):
        inp, out = source.read_part(index), scored.read_part(index)
        assert out.select([f.name for f in S.ROLLOUT_FIELDS]).equals(inp)  # ids, order, every input column
        lengths = [
            len(p) + len(c)
            for p, c in zip(inp[S.PROMPT_TOKEN_IDS].to_pylist(), inp[S.COMPLETION_TOKEN_IDS].to_pylist())
        ]
        order = [i for bucket in tight_length_buckets(lengths, 48, pass_overhead_tokens(48, "cpu")) for i in bucket]
        reordered += order != list(range(len(lengths)))
    assert reordered, "the buckets never reordered rows, so this test checks nothing"
    assert ScoreTeacherConfig().micro_batch_tokens != 48  # SMALL_BATCHES really overrides the default


def test_resume_recreates_exactly_the_missing_part(models, rollouts, tmp_path):
    out = tmp_path / "s"
    score(models["teacher"], rollouts, out, "score_teacher.top_k=3")
    full = {p.name: p.read_bytes() for p in out.glob("part-*.parquet")}
    assert len(full) == 4
    # What a run killed before its manifest looks like, with part 2 not yet written.
    (out / MANIFEST).unlink()
    (out / "part-00002.parquet").unlink()
    kept = {p.name: p.stat().st_mtime_ns for p in out.glob("part-*.parquet")}
    summary = score(models["teacher"], rollouts, out, "score_teacher.top_k=3")
    assert not summary.skipped and summary.rows == 32
    assert {p.name: p.read_bytes() for p in out.glob("part-*.parquet")} == full
    assert {n: (out / n).stat().st_mtime_ns for n in kept} == kept  # the other parts were not rewritten
    assert json.loads((out / MANIFEST).read_text())["timings"]["parts_written"] == 1
    # A complete output with the same inputs is a no-op; different scoring settings are refused.
    before = dir_digest(out)
    assert score(models["teacher"], rollouts, out, "score_teacher.top_k=3").skipped
    assert dir_digest(out) == before
    from rladctl.errors import ArtifactError

    with pytest.raises(ArtifactError, match="different run"):
        score(models["teacher"], rollouts, out, "score_teacher.top_k=3", "score_teacher.temperature=2.0")
    assert dir_digest(out) == before


# --------------------------------------------------------------------------------------------
# refusals, through the CLI as a user sees them


@pytest.fixture(scope="module", params=["smaller", "larger"])
def other_vocab_teacher(request, tmp_path_factory) -> tuple[Path, str]:
    """A teacher with its own tokenizer, trained on other text: one with fewer ids than the rollouts
    use (caught by the id range) and one with more ids (caught by comparing the two vocabularies)."""
    from conftest import task_corpus

    from rladctl.models.factory import init_model

    texts = [f"the {w} fox jumps over {n} lazy dogs, quickly!" for n in range(200) for w in ("brown", "red", "grey")]
    if request.param == "larger":
        texts, size, says = texts + task_corpus(), 420, "tokenizer sizes differ"
    else:
        size, says = 320, "teacher's vocabulary has"  # this corpus only fills ~300 ids
    return init_model(
        tmp_path_factory.mktemp("other") / "teacher", "tiny-1m", texts=texts, vocab_size=size, seed=2
    ), says


@pytest.fixture(scope="module")
def scored(models, rollouts, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("scored") / "s"
    score(models["teacher"], rollouts, out)
    return out


def assert_refused(done, out: Path, *phrases: str) -> None:
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    lines = done.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), done.stderr
    for phrase in phrases:
        assert phrase in lines[0], lines[0]
    assert not (out / MANIFEST).exists()
    assert not list(out.glob("part-*.parquet"))  # a missing directory globs to nothing too


def cli_score(teacher, inp, out, *extra):
    args = ["score-teacher", "--input", str(inp), "--out", str(out), *extra]
    return run_cli(*args, *(["--teacher", str(teacher)] if teacher else []))


def test_refuses_a_teacher_with_another_vocabulary(models, rollouts, other_vocab_teacher, tmp_path):
    teacher, says = other_vocab_teacher
    before = dir_digest(rollouts)
    done = cli_score(teacher, rollouts, tmp_path / "s")
    assert_refused(done, tmp_path / "s", says)
    assert dir_digest(rollouts) == before


def test_refuses_a_scored_artifact_as_input(models, scored, tmp_path):
    before = dir_digest(scored)
    done = cli_score(models["teacher"], scored, tmp_path / "s")
    assert_refused(done, tmp_path / "s", "kind 'scored'", "rollouts")
    assert dir_digest(scored) == before


def test_refuses_an_incomplete_input(models, rollouts, tmp_path):
    partial = tmp_path / "partial"
    shutil.copytree(rollouts, partial)
    (partial / MANIFEST).unlink()
    done = cli_score(models["teacher"], partial, tmp_path / "s")
    assert_refused(done, tmp_path / "s", "incomplete")


@pytest.mark.parametrize("teacher", [None, "missing"])
def test_refuses_a_missing_teacher(rollouts, tmp_path, teacher):
    done = cli_score(tmp_path / teacher if teacher else None, rollouts, tmp_path / "s", *sets("score_teacher.top_k=2"))
    assert_refused(done, tmp_path / "s", "does not exist" if teacher else "no teacher given")
