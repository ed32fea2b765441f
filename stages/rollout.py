"""`rladctl rollout`: the student samples G completions per prompt -> a rollouts artifact.

The sampling itself (prompts, fingerprint, resumable parts, manifest) is ``rladctl.sampling``,
which eval shares; this stage runs it on the [rollout] table and summarises what it wrote.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from rladctl import distributed
from rladctl.config import LoadedRecipe
from rladctl.sampling import generate_artifact
from rladctl.store import schema as S
from rladctl.store.lock import claim_output


@dataclass
class RolloutSummary:
    out: str
    rows: int
    prompts: int
    completion_tokens: int
    seconds: float
    tokens_per_s: float
    reward_mean: float
    solved_frac: float  # rows with reward 1.0
    truncated_frac: float  # rows that hit max_new_tokens
    skipped: bool  # the complete artifact already existed

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def run_rollout(recipe: LoadedRecipe, overwrite: bool = False) -> RolloutSummary:
    cfg = recipe.rollout
    with claim_output(cfg.out, {"model": cfg.model, "task file": recipe.task.path}, distributed.is_main()):
        skipped = generate_artifact(recipe, cfg, S.ROLLOUTS, overwrite)
    return summarize(cfg.out, skipped)


def summarize(path: str, skipped: bool) -> RolloutSummary:
    import pyarrow.compute as pc

    from rladctl.store.artifacts import open_artifact

    artifact = open_artifact(path, (S.ROLLOUTS, S.EVAL), verify=False)
    table = artifact.table([S.PROMPT_ID, S.REWARD, S.FINISH_REASON, S.COMPLETION_TOKEN_IDS])
    rewards = table[S.REWARD].to_numpy()
    tokens = int(pc.sum(pc.list_value_length(table[S.COMPLETION_TOKEN_IDS])).as_py() or 0)
    seconds = float(artifact.manifest.get("timings", {}).get("seconds", 0.0))
    return RolloutSummary(
        out=str(path),
        rows=table.num_rows,
        prompts=len(set(table[S.PROMPT_ID].to_pylist())),
        completion_tokens=tokens,
        seconds=seconds,
        tokens_per_s=tokens / seconds if seconds else 0.0,
        reward_mean=float(rewards.mean()) if len(rewards) else 0.0,
        solved_frac=float((rewards >= 1.0).mean()) if len(rewards) else 0.0,
        truncated_frac=float(pc.mean(pc.equal(table[S.FINISH_REASON], S.FINISH_LENGTH)).as_py() or 0.0),
        skipped=skipped,
    )
