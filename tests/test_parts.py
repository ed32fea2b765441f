"""The part driver: load only when there is work, write only the missing parts, close the backend."""

from __future__ import annotations

import pytest

from rladctl.backends import BackendInfo
from rladctl.sampling import to_table
from rladctl.store import schema as S
from rladctl.store.parts import open_parts


class FakeBackend:
    info = BackendInfo("fake", "1.0", "torch.float32")

    def __init__(self):
        self.closed = False

    def close(self) -> None:
        self.closed = True


def part_table(index: int):
    """Part ``index``: two rows of index + 1 and index + 2 completion tokens."""
    rows = [[7] * (index + 1), [7] * (index + 2)]
    cols = {f.name: [] for f in S.ROLLOUT_FIELDS}
    for g, ids in enumerate(rows):
        row = {
            S.PROMPT_ID: f"p{index}",
            S.SAMPLE_IDX: g,
            S.TASK: "t",
            S.TASK_METADATA: "{}",
            S.PROMPT: "q",
            S.PROMPT_TOKEN_IDS: [1],
            S.COMPLETION: "c",
            S.COMPLETION_TOKEN_IDS: ids,
            S.SAMPLER_LOGPROBS: [-1.0] * len(ids),
            S.FINISH_REASON: S.FINISH_LENGTH,
            S.REWARD: 0.0,
            S.ANSWER: "a",
            S.EXTRACTED: "",
            S.POLICY_STEP: 0,
        }
        for key, value in row.items():
            cols[key].append(value)
    return to_table(cols, S.ROLLOUTS)


def write(out, num_parts: int, fail_at: int | None = None):
    loaded, made = [], []

    def load():
        loaded.append(FakeBackend())
        return loaded[-1]

    def make_part(backend, index, on_tokens):
        if index == fail_at:
            raise KeyboardInterrupt
        made.append(index)
        return part_table(index)

    parts = open_parts(str(out), S.ROLLOUTS, "f" * 32, False, num_parts)
    run = None if parts.complete else parts.write("rollouts", load, make_part)
    if run is not None:
        parts.finalize(backend=run.info.entry(), timings=run.timings)
    return parts, run, loaded, made


def test_parts_are_written_once_and_a_killed_run_resumes_the_rest(tmp_path):
    out = tmp_path / "a"
    with pytest.raises(KeyboardInterrupt):
        write(out, 3, fail_at=2)
    assert sorted(p.name for p in out.glob("part-*.parquet")) == ["part-00000.parquet", "part-00001.parquet"]

    parts, run, loaded, made = write(out, 3)
    assert parts.kept == 2 and made == [2]  # only the missing part
    assert len(loaded) == 1 and loaded[0].closed
    # part 2 holds 3 + 4 completion tokens; the manifest counts what this run wrote
    assert run.timings["completion_tokens"] == 7 and run.timings["parts_written"] == 1 and run.timings["ranks"] == 1
    assert run.info.entry() == {"name": "fake", "version": "1.0"}

    parts, run, loaded, made = write(out, 3)
    assert parts.complete and run is None and loaded == [] and made == []  # complete: nothing loads


def test_the_backend_is_closed_when_a_part_fails(tmp_path):
    backend = FakeBackend()

    def boom(b, index, on_tokens):
        raise RuntimeError("boom")

    parts = open_parts(str(tmp_path / "b"), S.ROLLOUTS, "f" * 32, False, 2)
    with pytest.raises(RuntimeError, match="boom"):
        parts.write("rollouts", lambda: backend, boom)
    assert backend.closed


def test_a_killed_run_that_left_every_part_still_loads_for_the_manifest(tmp_path):
    """The manifest names the backend, so rank 0 loads it even with no part left to write."""
    out = tmp_path / "c"
    write(out, 2)
    (out / "_manifest.json").unlink()
    parts, run, loaded, made = write(out, 2)
    assert made == [] and len(loaded) == 1 and run.timings["parts_written"] == 0
    assert (out / "_manifest.json").exists()
