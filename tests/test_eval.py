"""eval: artifacts + report on tiny models, identical reruns, --from, partial credit, k > n, labels."""

from __future__ import annotations

import json
import math
import zlib
from pathlib import Path

import matplotlib.image
import pandas as pd
import pytest
from conftest import TASK_SETS, run_cli, sets

from rladctl.config import load_recipe
from rladctl.errors import ArtifactError, ConfigError
from rladctl.store import schema as S
from rladctl.store.artifacts import MANIFEST

# Two difficulty levels (chain_sum's num_terms 2 and 3); 8 held-out prompts x 4 samples, short.
EVAL_SETS = [s for s in TASK_SETS if not s.startswith("task.config=")] + [
    "task.config={min_terms = 2, max_terms = 3, min_digits = 1, max_digits = 2}",
    "eval.num_prompts=8",
    "eval.max_new_tokens=8",
    "eval.bootstrap=200",
]
K = 4


def eval_recipe(*extra: str):
    return load_recipe(None, EVAL_SETS + [f"eval.pass_at={K}", *extra])


def run_eval_api(*extra: str):
    from rladctl.stages.evaluate import run_eval

    return run_eval(eval_recipe(*extra))


def models_set(*paths) -> str:
    return "eval.models=" + json.dumps([str(p) for p in paths])


def frame(artifact_dir: Path) -> pd.DataFrame:
    """All rows of an artifact's parts, read with pandas (no rladctl)."""
    return pd.concat(pd.read_parquet(p) for p in sorted(artifact_dir.glob("part-*.parquet")))


def snapshot(root: Path) -> dict[str, tuple[int, bytes]]:
    return {
        str(p.relative_to(root)): (p.stat().st_mtime_ns, p.read_bytes()) for p in sorted(root.rglob("*")) if p.is_file()
    }


@pytest.fixture(scope="module")
def two_models(models, tmp_path_factory) -> list[Path]:
    """The student twice, under two parents: two models with the same directory name."""
    alias = tmp_path_factory.mktemp("alias") / "student"
    alias.symlink_to(models["student"], target_is_directory=True)
    return [models["student"], alias]


@pytest.fixture(scope="module")
def evaluated(two_models, tmp_path_factory):
    """One CLI eval of both models into ``out``; its JSON summary."""
    out = tmp_path_factory.mktemp("eval") / "a"
    args = ["eval", "--pass-at", str(K), "--task", "chain_sum", "--out", str(out), "--json"]
    for model in two_models:
        args += ["--model", str(model)]
    done = run_cli(*args, *sets(*EVAL_SETS))
    assert done.returncode == 0, done.stderr
    return out, json.loads(done.stdout)


def test_eval_writes_one_artifact_per_model_and_one_report(evaluated):
    out, result = evaluated
    assert result["K"] == K and list(result["summaries"]) == ["student", "student-2"]
    assert result["summaries"]["student"] == result["summaries"]["student-2"]  # same weights, same seed
    for label in result["summaries"]:
        manifest = json.loads((out / label / MANIFEST).read_text())
        assert manifest["kind"] == S.EVAL and manifest["rows"] == 8 * K
        assert manifest["sampling"] == {
            "temperature": 0.6,
            "top_p": 0.95,
            "max_new_tokens": 8,
            "seed": 0,
            "group_size": K,
        }
        rows = frame(out / label)
        assert rows.groupby(S.PROMPT_ID).size().tolist() == [K] * 8
        assert rows[S.PROMPT_ID].str.contains("/eval/").all()  # the held-out split
        assert (rows[S.CORRECT] == (rows[S.REWARD] >= 1.0)).all()
    md = (out / "report.md").read_text()
    for label in result["summaries"]:
        assert f"\n| {label} " in md  # one row per model
    tables = [line for line in md.splitlines() if line.startswith("| model")]
    assert len(tables) == 3  # comparison, Mean@K by difficulty, Pass@K by difficulty
    for header in tables[1:]:
        assert [c.strip() for c in header.split("|")[1:-1]] == ["model", "2", "3", "all"]
    assert not [p for p in out.rglob("*") if ".tmp" in p.name]


def test_plots_open_with_content(evaluated):
    out, _ = evaluated
    for name in ("pass_at_k.png", "difficulty.png"):
        image = matplotlib.image.imread(out / name)  # [H, W, channels]
        assert image.shape[0] > 400 and image.shape[1] > 600
        assert image[..., :3].std() > 0.05  # axes, labels and legend were drawn


def test_same_seed_gives_byte_identical_report(evaluated, two_models, tmp_path):
    out, _ = evaluated
    again = run_eval_api(models_set(*two_models), f'eval.out="{tmp_path / "b"}"')
    for name in ("report.json", "report.md", "pass_at_k.png", "difficulty.png"):
        assert (out / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name
    assert [row[0] for row in again.rows] == ["student", "student-2"]


def test_rerun_over_complete_output_is_a_noop_and_other_inputs_are_refused(evaluated, two_models):
    out, _ = evaluated
    before = snapshot(out)
    run_eval_api(models_set(*two_models), f'eval.out="{out}"')
    assert snapshot(out) == before  # same bytes and same mtimes: nothing was rewritten
    with pytest.raises(ArtifactError, match="different run"):
        run_eval_api(models_set(*two_models), f'eval.out="{out}"', "eval.seed=1")
    assert snapshot(out) == before


def test_pass_at_more_than_n_is_refused(evaluated, two_models, tmp_path):
    out, _ = evaluated
    done = run_cli("eval", "--from", str(out / "student"), "--pass-at", str(2 * K), "--out", str(tmp_path / "c"))
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and done.stderr.startswith("error: ")
    assert f"n={K}" in done.stderr and str(out / "student") in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "c").exists()
    with pytest.raises(ConfigError, match="eval.n is 2"):
        run_eval_api(models_set(two_models[0]), f'eval.out="{tmp_path / "d"}"', "eval.n=2")


# --- partial credit: a stand-in verifier that gives 0, 0.5, 0.99 or 1 ------------------------------


def fake_score(self, metadata: dict, extracted: str) -> float:
    return (0.0, 0.5, 0.99, 1.0)[zlib.crc32(extracted.encode()) % 4]


@pytest.fixture(scope="module")
def partial(models, tmp_path_factory):
    """A rollouts artifact and an eval run (n = 6 > K) whose rewards include partial credit.

    A random tiny model never closes its answer tag, so the answer is the whole completion and a
    hash of it picks the score: the real sampling path, with rewards that are not all zero.
    """
    from rladctl.stages.rollout import run_rollout
    from rladctl.tasks.catalog import GymTask

    root = tmp_path_factory.mktemp("partial")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr("rladctl.tasks.catalog.extract_answer", lambda completion, prompt: completion)
        mp.setattr(GymTask, "score", fake_score)
        run_rollout(
            load_recipe(
                None,
                EVAL_SETS
                + [
                    f'rollout.model="{models["student"]}"',
                    f'rollout.out="{root / "rollouts"}"',
                    'rollout.split="eval"',
                    "rollout.num_prompts=8",
                    "rollout.group_size=6",
                    "rollout.max_new_tokens=8",
                    "rollout.prompts_per_part=3",
                ],
            )
        )
        sampled = run_eval_api(models_set(models["student"]), f'eval.out="{root / "eval"}"', "eval.n=6")
    return root, sampled


def hand_metrics(rows: pd.DataFrame) -> dict:
    """Mean@K, accuracy and Pass@k straight from the Parquet rewards (correct = reward >= 1)."""
    by_prompt = rows.groupby(S.PROMPT_ID, sort=False)[S.REWARD]
    n = int(by_prompt.size().iloc[0])
    c = by_prompt.apply(lambda r: int((r >= 1.0).sum()))
    return {
        "mean": float(rows[S.REWARD].astype("float64").mean()),
        "accuracy": float((rows[S.REWARD] >= 1.0).mean()),
        "pass_at": {k: float(sum(1 - math.comb(n - ci, k) / math.comb(n, k) for ci in c) / len(c)) for k in (1, 2, 4)},
    }


def test_correct_column_never_counts_partial_credit(partial):
    root, sampled = partial
    rows = frame(root / "eval" / "student")
    assert (rows[S.CORRECT] == (rows[S.REWARD] >= 1.0)).all()
    partial_rows = rows[(rows[S.REWARD] > 0) & (rows[S.REWARD] < 1)]
    assert len(partial_rows) > 0 and not partial_rows[S.CORRECT].any()  # 0.5 and 0.99 are wrong
    assert rows[S.CORRECT].any()
    overall = sampled.summaries["student"].overall
    assert overall.accuracy == pytest.approx(rows[S.CORRECT].mean(), abs=1e-12)
    assert overall.accuracy < (rows[S.REWARD] > 0).mean()


def test_from_rollouts_matches_hand_computed_metrics(partial, tmp_path):
    root, _ = partial
    result = run_eval_api(f'eval.from_artifacts=["{root / "rollouts"}"]', f'eval.out="{tmp_path}"')
    assert list(result.summaries) == ["rollouts"] and not (tmp_path / "rollouts").exists()  # nothing sampled
    summary = result.summaries["rollouts"]
    rows = frame(root / "rollouts")
    want = hand_metrics(rows)
    assert summary.n == 6 and summary.overall.prompts == 8
    assert summary.overall.mean == pytest.approx(want["mean"], abs=1e-12)
    assert summary.overall.accuracy == pytest.approx(want["accuracy"], abs=1e-12)
    assert summary.overall.pass_at == pytest.approx(want["pass_at"], abs=1e-12)
    rows["level"] = [str(json.loads(m)["num_terms"]) for m in rows[S.TASK_METADATA]]
    assert sorted(summary.by_difficulty) == ["2", "3"]
    for level, group in rows.groupby("level"):
        assert summary.by_difficulty[level].mean == pytest.approx(hand_metrics(group)["mean"], abs=1e-12)
        assert summary.by_difficulty[level].pass_at == pytest.approx(hand_metrics(group)["pass_at"], abs=1e-12)


def test_from_eval_artifact_reproduces_the_sampling_run(partial, tmp_path):
    root, sampled = partial
    result = run_eval_api(f'eval.from_artifacts=["{root / "eval" / "student"}"]', f'eval.out="{tmp_path}"')
    assert result.summaries["student"].to_dict() == sampled.summaries["student"].to_dict()
    assert (tmp_path / "report.json").read_bytes() == (root / "eval" / "report.json").read_bytes()


# --- labels -----------------------------------------------------------------------------------------


def test_labels_from_directory_names_are_unique_and_safe():
    from rladctl.config import EvalConfig
    from rladctl.stages.evaluate import labels_for, safe_name, unique

    sources = ["a/student", "b/student/", "c/student-2", "..", "hub/Qwen 2"]
    # the second "student" skips "student-2", which another source already is
    assert labels_for(EvalConfig(), sources) == ["student", "student-3", "student-2", "model", "Qwen-2"]
    assert labels_for(EvalConfig(labels=("base", "rlad")), ["x", "y"]) == ["base", "rlad"]
    with pytest.raises(ConfigError, match="given twice"):
        labels_for(EvalConfig(labels=("base", "base")), ["x", "y"])
    with pytest.raises(ConfigError, match="1 labels for 2 models"):
        labels_for(EvalConfig(labels=("base",)), ["x", "y"])
    # user labels become directory names inside --out, never paths out of it
    assert unique([safe_name(label) for label in ("base model", "base/model", "../up")]) == [
        "base-model",
        "base-model-2",
        "-up",
    ]
