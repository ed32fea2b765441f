"""The artifact contract (DESIGN §3): atomic parts, manifest last, resume, refusal, verification."""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from rladctl.errors import ArtifactError, MissingPathError
from rladctl.store import schema as S
from rladctl.store.artifacts import (
    MANIFEST,
    ArtifactWriter,
    open_artifact,
    part_name,
    validate_token_columns,
)
from rladctl.store.files import sha256_file

FP = "f" * 32


def rollout_table(rows: int = 2, start: int = 0, tokens: int = 3) -> pa.Table:
    """``rows`` hand-made rollout rows (2 samples per prompt), ``tokens`` completion tokens each."""
    cols = {
        S.PROMPT_ID: [f"p{(start + i) // 2}" for i in range(rows)],
        S.SAMPLE_IDX: [(start + i) % 2 for i in range(rows)],
        S.TASK: ["chain_sum"] * rows,
        S.TASK_METADATA: ["{}"] * rows,
        S.PROMPT: ["1 + 2 ="] * rows,
        S.PROMPT_TOKEN_IDS: [[5, 6, 7]] * rows,
        S.COMPLETION: ["3"] * rows,
        S.COMPLETION_TOKEN_IDS: [list(range(tokens))] * rows,
        S.SAMPLER_LOGPROBS: [[-0.5] * tokens] * rows,
        S.FINISH_REASON: [S.FINISH_STOP] * rows,
        S.REWARD: [1.0] * rows,
        S.ANSWER: ["3"] * rows,
        S.EXTRACTED: ["3"] * rows,
        S.POLICY_STEP: [0] * rows,
    }
    return pa.Table.from_pydict(cols, schema=S.rollout_schema())


def write_artifact(path: Path, parts: int = 2, fp: str = FP, kind: str = S.ROLLOUTS, tables=None) -> dict:
    writer = ArtifactWriter(path, kind, fp)
    for i in range(parts):
        writer.write_part(i, tables[i] if tables else rollout_table(start=2 * i))
    return writer.finalize(parts, note="hand-made")


def listing(path: Path) -> list[str]:
    return sorted(p.name for p in path.iterdir())


def one_line(exc: pytest.ExceptionInfo) -> str:
    text = str(exc.value)
    assert "\n" not in text, text
    return text


def rewrite_manifest_checksums(path: Path) -> None:
    """Make the manifest agree with the parts as they are now (a tool that rewrote them)."""
    manifest = json.loads((path / MANIFEST).read_text())
    for entry in manifest["parts"]:
        entry["sha256"] = sha256_file(path / entry["file"])
    (path / MANIFEST).write_text(json.dumps(manifest))


# --------------------------------------------------------------------------------------------
# writing


def test_complete_artifact_round_trips_and_opens_without_rladctl(tmp_path):
    manifest = write_artifact(tmp_path / "a")
    assert listing(tmp_path / "a") == [MANIFEST, part_name(0), part_name(1)]
    assert manifest["kind"] == S.ROLLOUTS and manifest["rows"] == 4 and manifest["note"] == "hand-made"
    assert [p["rows"] for p in manifest["parts"]] == [2, 2]
    assert manifest["parts"][0]["sha256"] == sha256_file(tmp_path / "a" / part_name(0))
    assert json.loads((tmp_path / "a" / MANIFEST).read_text()) == manifest
    artifact = open_artifact(tmp_path / "a", [S.ROLLOUTS])
    assert artifact.rows == 4 and artifact.table().equals(pa.concat_tables([rollout_table(), rollout_table(start=2)]))
    ref = artifact.reference()
    assert ref == {
        "path": str(tmp_path / "a"),
        "kind": S.ROLLOUTS,
        "manifest_sha256": sha256_file(tmp_path / "a" / MANIFEST),
        "content_id": ref["content_id"],
    }
    # content_id depends on the data only: a manifest rewritten with other timings keeps it.
    manifest = json.loads((tmp_path / "a" / MANIFEST).read_text())
    (tmp_path / "a" / MANIFEST).write_text(json.dumps(manifest | {"created_unix": 0}))
    again = open_artifact(tmp_path / "a", [S.ROLLOUTS])
    assert again.content_id == ref["content_id"] and again.sha256 != ref["manifest_sha256"]
    # Plain pyarrow over the directory sees exactly the rows (hidden and non-Parquet files skipped).
    (tmp_path / "a" / ".part-00002.parquet.tmp-123").write_bytes(b"half a file")
    assert pq.read_table(sorted((tmp_path / "a").glob("part-*.parquet"))).num_rows == 4


def test_parts_are_written_to_hidden_temp_names_then_renamed(tmp_path, monkeypatch):
    seen = []
    real_write = pq.write_table

    def spy(table, where, *args, **kwargs):
        seen.append(Path(where))
        assert not (tmp_path / "a" / part_name(0)).exists()  # the final name appears only by rename
        return real_write(table, where, *args, **kwargs)

    monkeypatch.setattr(pq, "write_table", spy)
    ArtifactWriter(tmp_path / "a", S.ROLLOUTS, FP).write_part(0, rollout_table())
    assert len(seen) == 1 and seen[0].parent == tmp_path / "a"
    assert seen[0].name.startswith(".") and seen[0].name != part_name(0)
    assert listing(tmp_path / "a") == [part_name(0)]


def test_temp_files_of_a_killed_writer_are_removed_on_the_next_start(tmp_path):
    writer = ArtifactWriter(tmp_path / "a", S.ROLLOUTS, FP)
    writer.write_part(0, rollout_table())
    (tmp_path / "a" / f".{part_name(1)}.tmp-999").write_bytes(b"PAR1 half")
    (tmp_path / "a" / f".{MANIFEST}.tmp-999").write_text("{")
    (tmp_path / "a" / "notes.txt").write_text("mine")  # not the writer's: left alone
    again = ArtifactWriter(tmp_path / "a", S.ROLLOUTS, FP)
    assert again.done == {0} and not again.complete
    assert listing(tmp_path / "a") == ["notes.txt", part_name(0)]


def test_manifest_is_written_last_and_only_by_finalize(tmp_path):
    writer = ArtifactWriter(tmp_path / "a", S.ROLLOUTS, FP)
    writer.write_part(0, rollout_table())
    assert not (tmp_path / "a" / MANIFEST).exists()
    with pytest.raises(ArtifactError, match=r"incomplete \(no _manifest.json\).*re-run the stage"):
        open_artifact(tmp_path / "a", [S.ROLLOUTS])
    with pytest.raises(RuntimeError, match=r"missing parts \[1\]"):
        writer.finalize(2)
    assert not (tmp_path / "a" / MANIFEST).exists()
    writer.write_part(1, rollout_table(start=2))
    writer.finalize(2)
    assert writer.complete and (tmp_path / "a" / MANIFEST).exists()


def test_resume_keeps_matching_parts_and_a_complete_rerun_is_a_noop(tmp_path):
    writer = ArtifactWriter(tmp_path / "a", S.ROLLOUTS, FP)
    writer.write_part(1, rollout_table(start=2))
    resumed = ArtifactWriter(tmp_path / "a", S.ROLLOUTS, FP)
    assert resumed.done == {1}
    resumed.write_part(0, rollout_table())
    resumed.finalize(2)
    before = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "a").iterdir()}
    assert ArtifactWriter(tmp_path / "a", S.ROLLOUTS, FP).complete
    assert before == {p.name: p.stat().st_mtime_ns for p in (tmp_path / "a").iterdir()}


def test_finalize_refuses_a_part_that_another_run_wrote_after_the_scan(tmp_path):
    mine = ArtifactWriter(tmp_path / "a", S.ROLLOUTS, FP)
    mine.write_part(0, rollout_table())
    ArtifactWriter(tmp_path / "b", S.ROLLOUTS, "another run").write_part(1, rollout_table(start=2))
    (tmp_path / "b" / part_name(1)).rename(tmp_path / "a" / part_name(1))
    mine.done.add(1)  # as refresh() would have counted it before this check existed
    with pytest.raises(ArtifactError) as exc:
        mine.finalize(2)
    assert one_line(exc) == (
        f"part {part_name(1)} of {tmp_path / 'a'} was written by a different run. re-run the command to write it again."
    )
    assert not (tmp_path / "a" / MANIFEST).exists()


@pytest.mark.parametrize("finished", [True, False], ids=["complete", "partial"])
def test_a_different_run_is_refused_unless_overwrite(tmp_path, finished):
    if finished:
        write_artifact(tmp_path / "a")
    else:
        ArtifactWriter(tmp_path / "a", S.ROLLOUTS, FP).write_part(0, rollout_table())
    before = {p.name: p.read_bytes() for p in (tmp_path / "a").iterdir()}
    with pytest.raises(ArtifactError) as exc:
        ArtifactWriter(tmp_path / "a", S.ROLLOUTS, "0" * 32)
    assert "from a different run" in one_line(exc) and "--overwrite" in one_line(exc)
    assert before == {p.name: p.read_bytes() for p in (tmp_path / "a").iterdir()}  # nothing damaged
    writer = ArtifactWriter(tmp_path / "a", S.ROLLOUTS, "0" * 32, overwrite=True)
    assert writer.done == set() and not writer.complete and listing(tmp_path / "a") == []


def test_same_fingerprint_but_another_kind_is_a_different_run(tmp_path):
    write_artifact(tmp_path / "a")
    with pytest.raises(ArtifactError, match="different run"):
        ArtifactWriter(tmp_path / "a", S.SCORED, FP)


def test_overwrite_removes_the_manifest_before_any_part(tmp_path, monkeypatch):
    write_artifact(tmp_path / "a")
    removed = []
    real_unlink = Path.unlink

    def spy(self, *args, **kwargs):
        removed.append(self.name)
        return real_unlink(self, *args, **kwargs)

    monkeypatch.setattr(Path, "unlink", spy)
    ArtifactWriter(tmp_path / "a", S.ROLLOUTS, "0" * 32, overwrite=True)
    assert removed[:2] == [MANIFEST, "manifest.json"] and sorted(removed[2:]) == [part_name(0), part_name(1)]


def test_a_damaged_manifest_is_refused_but_does_not_block_overwrite(tmp_path):
    write_artifact(tmp_path / "a")
    (tmp_path / "a" / MANIFEST).write_text("{not json")
    with pytest.raises(ArtifactError, match="unreadable _manifest.json.*--overwrite"):
        ArtifactWriter(tmp_path / "a", S.ROLLOUTS, FP)
    with pytest.raises(ArtifactError, match=r"manifest .* is unreadable"):
        open_artifact(tmp_path / "a", [S.ROLLOUTS])
    assert ArtifactWriter(tmp_path / "a", S.ROLLOUTS, FP, overwrite=True).done == set()
    assert listing(tmp_path / "a") == []


def test_a_failed_write_leaves_no_temp_file_and_no_manifest(tmp_path, monkeypatch):
    writer = ArtifactWriter(tmp_path / "a", S.ROLLOUTS, FP)
    writer.write_part(0, rollout_table())

    def disk_full(table, where, *args, **kwargs):
        Path(where).write_bytes(b"PAR1 partial")  # the writer got part-way, then the disk filled
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(pq, "write_table", disk_full)
    with pytest.raises(ArtifactError) as exc:
        writer.write_part(1, rollout_table(start=2))
    line = one_line(exc)
    assert (
        f"cannot write {tmp_path / 'a' / part_name(1)} (No space left on device)" in line and "re-run to resume" in line
    )
    assert listing(tmp_path / "a") == [part_name(0)] and writer.done == {0}


def test_a_failed_manifest_write_leaves_no_manifest(tmp_path, monkeypatch):
    writer = ArtifactWriter(tmp_path / "a", S.ROLLOUTS, FP)
    writer.write_part(0, rollout_table())
    monkeypatch.setattr(os, "fsync", lambda fd: (_ for _ in ()).throw(OSError(errno.ENOSPC, "No space left on device")))
    with pytest.raises(ArtifactError, match=r"cannot write .*_manifest.json \(No space left on device\)"):
        writer.finalize(1)
    assert listing(tmp_path / "a") == [part_name(0)] and not writer.complete


def test_an_errno_only_oserror_still_gives_a_readable_reason(tmp_path, monkeypatch):
    def fail(*args, **kwargs):
        raise OSError(errno.ENOSPC, None)

    monkeypatch.setattr(pq, "write_table", fail)
    with pytest.raises(ArtifactError, match=r"\(No space left on device\)"):
        ArtifactWriter(tmp_path / "a", S.ROLLOUTS, FP).write_part(0, rollout_table())


# --------------------------------------------------------------------------------------------
# reading and verification


def test_missing_directory_and_wrong_kind(tmp_path):
    with pytest.raises(MissingPathError, match="input artifact .* does not exist"):
        open_artifact(tmp_path / "nope", [S.ROLLOUTS])
    write_artifact(tmp_path / "a")
    with pytest.raises(ArtifactError) as exc:
        open_artifact(tmp_path / "a", [S.SCORED], role="train input")
    assert one_line(exc) == f"train input artifact {tmp_path / 'a'} is of kind 'rollouts'. this command needs scored."


def test_a_flipped_byte_fails_the_checksum(tmp_path):
    write_artifact(tmp_path / "a")
    part = tmp_path / "a" / part_name(1)
    data = bytearray(part.read_bytes())
    data[len(data) // 2] ^= 0x01
    part.write_bytes(bytes(data))
    with pytest.raises(ArtifactError) as exc:
        open_artifact(tmp_path / "a", [S.ROLLOUTS])
    assert f"artifact part {part} does not match its manifest checksum" in one_line(exc)
    assert open_artifact(tmp_path / "a", [S.ROLLOUTS], verify=False).rows == 4  # verification is what catches it


def test_a_deleted_part_is_reported(tmp_path):
    write_artifact(tmp_path / "a")
    (tmp_path / "a" / part_name(0)).unlink()
    with pytest.raises(ArtifactError, match=r"part-00000.parquet is missing"):
        open_artifact(tmp_path / "a", [S.ROLLOUTS])


def test_a_truncated_part_is_reported_as_unreadable_parquet(tmp_path):
    write_artifact(tmp_path / "a")
    part = tmp_path / "a" / part_name(0)
    part.write_bytes(part.read_bytes()[: part.stat().st_size // 2])
    with pytest.raises(ArtifactError, match="checksum"):
        open_artifact(tmp_path / "a", [S.ROLLOUTS])
    rewrite_manifest_checksums(tmp_path / "a")  # checksums agree; the file itself is still broken
    with pytest.raises(ArtifactError) as exc:
        open_artifact(tmp_path / "a", [S.ROLLOUTS])
    assert f"artifact part {part} is not a readable Parquet file" in one_line(exc)


def test_missing_and_mistyped_columns_are_named(tmp_path):
    no_reward = rollout_table().drop_columns([S.REWARD])
    write_artifact(tmp_path / "a", parts=1, tables=[no_reward])
    with pytest.raises(ArtifactError) as exc:
        open_artifact(tmp_path / "a", [S.ROLLOUTS])
    assert one_line(exc).startswith(f"column 'reward' is missing, in {tmp_path / 'a' / part_name(0)}.")

    table = rollout_table()
    wide = table.set_column(table.schema.get_field_index(S.REWARD), S.REWARD, table[S.REWARD].cast(pa.float64()))
    write_artifact(tmp_path / "b", parts=1, tables=[wide])
    with pytest.raises(ArtifactError, match=r"column 'reward' has type double, expected float, in .*cast the column"):
        open_artifact(tmp_path / "b", [S.ROLLOUTS])


def test_a_scored_artifact_needs_the_teacher_column(tmp_path):
    write_artifact(tmp_path / "a", kind=S.SCORED)  # rollout rows only, labelled scored
    with pytest.raises(ArtifactError, match="column 'teacher_logprobs' is missing"):
        open_artifact(tmp_path / "a", [S.SCORED])


def test_a_newer_schema_version_is_refused(tmp_path):
    write_artifact(tmp_path / "a")
    manifest = json.loads((tmp_path / "a" / MANIFEST).read_text())
    manifest["schema_version"] = S.SCHEMA_VERSION + 1
    (tmp_path / "a" / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(ArtifactError, match="upgrade rladctl"):
        open_artifact(tmp_path / "a", [S.ROLLOUTS])


# --------------------------------------------------------------------------------------------
# per-token columns


def with_column(table: pa.Table, name: str, values, type_) -> pa.Table:
    column = pa.array(values, type=type_)
    if name in table.column_names:
        return table.set_column(table.schema.get_field_index(name), name, column)
    return table.append_column(name, column)


def test_token_columns_of_the_right_length_and_finite_pass():
    table = with_column(rollout_table(3), S.TEACHER_LOGPROBS, [[-1.0, -2.0, -3.0]] * 3, pa.list_(pa.float32()))
    validate_token_columns(table, S.PER_TOKEN_COLUMNS, "here")


def test_a_length_mismatch_names_the_row_and_column():
    table = with_column(
        rollout_table(3), S.TEACHER_LOGPROBS, [[-1.0] * 3, [-1.0] * 3, [-1.0] * 2], pa.list_(pa.float32())
    )
    with pytest.raises(ArtifactError) as exc:
        validate_token_columns(table, S.PER_TOKEN_COLUMNS, "scored/part-00000.parquet")
    assert one_line(exc).startswith(
        "row 2 (prompt_id p1, sample 0) has 2 values in 'teacher_logprobs' but 3 completion tokens, in scored/part-00000.parquet."
    )


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_nan_and_inf_are_found_with_their_row(bad):
    values = [[-1.0] * 3, [-1.0] * 3, [-1.0, bad, -1.0], [-1.0] * 3]
    table = with_column(rollout_table(4), S.SAMPLER_LOGPROBS, values, pa.list_(pa.float32()))
    with pytest.raises(
        ArtifactError, match=r"column 'sampler_logprobs' holds NaN or inf \(first in row 2, prompt_id p1\)"
    ):
        validate_token_columns(table, S.PER_TOKEN_COLUMNS, "here")


def test_nan_in_a_nested_top_k_column_is_found():
    ids = [[[1, 2]] * 3] * 3
    logprobs = [[[-1.0, -2.0]] * 3, [[-1.0, -2.0]] * 3, [[-1.0, -2.0], [-1.0, float("nan")], [-1.0, -2.0]]]
    table = with_column(rollout_table(3), S.TEACHER_TOPK_IDS, ids, pa.list_(pa.list_(pa.int32())))
    table = with_column(table, S.TEACHER_TOPK_LOGPROBS, logprobs, pa.list_(pa.list_(pa.float32())))
    with pytest.raises(ArtifactError, match=r"'teacher_topk_logprobs' holds NaN or inf \(first in row 2"):
        validate_token_columns(table, S.PER_TOKEN_COLUMNS, "here")


def test_row_numbers_are_right_across_chunks_and_empty_rows():
    first = with_column(rollout_table(2, tokens=0), S.SAMPLER_LOGPROBS, [[], []], pa.list_(pa.float32()))
    second = with_column(
        rollout_table(2, start=2), S.SAMPLER_LOGPROBS, [[-1.0] * 3, [-1.0, -1.0, float("nan")]], pa.list_(pa.float32())
    )
    table = pa.concat_tables([first, second])
    assert table[S.SAMPLER_LOGPROBS].num_chunks == 2
    with pytest.raises(ArtifactError, match=r"first in row 3, prompt_id p1\)"):
        validate_token_columns(table, [S.SAMPLER_LOGPROBS], "here")


def test_parts_that_differ_only_in_nullability_read_as_one_table(tmp_path):
    """Another tool's Parquet may mark a column non-nullable in one part and not in the next."""
    strict = rollout_table(start=2)
    schema = pa.schema(
        [f.with_nullable(not f.nullable) if f.name == S.REWARD else f for f in strict.schema],
        metadata=strict.schema.metadata,
    )
    write_artifact(tmp_path / "a", tables=[rollout_table(), strict.cast(schema)])
    table = open_artifact(tmp_path / "a", [S.ROLLOUTS]).table()
    assert table.num_rows == 4 and table[S.PROMPT_ID].to_pylist() == ["p0", "p0", "p1", "p1"]


# --------------------------------------------------------------------------------------------
# the manifest is untrusted data (DESIGN §3), and the directory is a dataset for other tools


def test_the_directory_reads_as_one_parquet_dataset_in_pandas_and_pyarrow(tmp_path):
    import pandas as pd
    import pyarrow.dataset as ds

    write_artifact(tmp_path / "a")
    assert (tmp_path / "a" / "_manifest.json").exists() and not (tmp_path / "a" / "manifest.json").exists()
    assert pq.read_table(tmp_path / "a").num_rows == 4
    assert len(pd.read_parquet(tmp_path / "a")) == 4
    assert ds.dataset(tmp_path / "a", format="parquet").count_rows() == 4


def test_an_artifact_with_the_old_manifest_name_is_still_read_and_resumed(tmp_path):
    manifest = write_artifact(tmp_path / "a")
    os.rename(tmp_path / "a" / MANIFEST, tmp_path / "a" / "manifest.json")
    assert open_artifact(tmp_path / "a", [S.ROLLOUTS]).rows == 4
    writer = ArtifactWriter(tmp_path / "a", S.ROLLOUTS, FP)
    assert writer.complete  # same fingerprint: nothing to redo
    again = ArtifactWriter(tmp_path / "b", S.ROLLOUTS, FP)
    for i in range(2):
        again.write_part(i, rollout_table(start=2 * i))
    assert again.finalize(2, note="hand-made")["parts"] == manifest["parts"]


def edit_manifest(path: Path, change) -> None:
    manifest = json.loads((path / MANIFEST).read_text())
    change(manifest)
    (path / MANIFEST).write_text(json.dumps(manifest))


@pytest.mark.parametrize(
    ("change", "complaint"),
    [
        (lambda m: m.update(parts="part-00000.parquet"), r"parts is str 'part-00000.parquet', not a list"),
        (lambda m: m["parts"][0].update(file=7), r"parts\[0\]\.file is 7, not a part file name"),
        (
            lambda m: m["parts"][0].update(file="../../elsewhere/part-00000.parquet"),
            r"parts\[0\]\.file is '\.\./\.\./elsewhere",
        ),
        (lambda m: m["parts"][1].update(file="/etc/passwd"), r"parts\[1\]\.file is '/etc/passwd'"),
        (lambda m: m["parts"][0].update(rows=-1), r"parts\[0\]\.rows is -1"),
        (lambda m: m["parts"][0].update(sha256=None), r"parts\[0\]\.sha256 is None"),
        (lambda m: m["parts"].append(dict(m["parts"][0])), r"a part file is listed twice"),
        (lambda m: m.update(rows=5), r"rows is 5 but its parts hold 4"),
        (lambda m: m.update(rows="4"), r"rows is '4', not an integer"),
        (lambda m: m.update(kind=3), r"kind is 3, not a string"),
        (lambda m: m.update(schema_version="1"), r"schema_version is '1'"),
        (lambda m: m.update(sampling={"temperature": "hot"}), r"sampling\.temperature is 'hot'"),
        (lambda m: m.update(sampling=[1]), r"sampling is list \[1\], not a table"),
    ],
)
def test_a_manifest_with_wrong_types_or_paths_outside_is_one_line(tmp_path, change, complaint):
    write_artifact(tmp_path / "a")
    edit_manifest(tmp_path / "a", change)
    with pytest.raises(
        ArtifactError, match=rf"manifest .* is invalid: {complaint}.*re-create the artifact with --overwrite"
    ):
        open_artifact(tmp_path / "a", [S.ROLLOUTS])
    one_line(pytest.raises(ArtifactError, open_artifact, tmp_path / "a", [S.ROLLOUTS]))


def test_a_manifest_with_nan_is_not_json(tmp_path):
    write_artifact(tmp_path / "a")
    text = (tmp_path / "a" / MANIFEST).read_text().replace('"note": "hand-made"', '"note": NaN')
    (tmp_path / "a" / MANIFEST).write_text(text)
    with pytest.raises(ArtifactError, match=r"unreadable \(NaN is not JSON\)"):
        open_artifact(tmp_path / "a", [S.ROLLOUTS])


def test_negative_token_ids_and_non_finite_rewards_are_refused():
    table = rollout_table(rows=2)
    ids = table.column_names.index(S.COMPLETION_TOKEN_IDS)
    bad_ids = table.set_column(ids, S.COMPLETION_TOKEN_IDS, pa.array([[0, 1, 2], [0, -3, 2]], pa.list_(pa.int32())))
    with pytest.raises(
        ArtifactError, match=r"column 'completion_token_ids' holds the token id -3 .*row 1, prompt_id p0"
    ):
        validate_token_columns(bad_ids, (), "t")
    rewards = table.column_names.index(S.REWARD)
    bad_reward = table.set_column(rewards, S.REWARD, pa.array([1.0, float("nan")], pa.float32()))
    with pytest.raises(ArtifactError, match=r"column 'reward' holds nan in row 1 .*rewards must be finite"):
        validate_token_columns(bad_reward, (), "t")
    validate_token_columns(table, (S.SAMPLER_LOGPROBS,), "t")  # the good table passes


def test_a_failed_write_gives_the_advice_of_its_cause(tmp_path):
    from rladctl.store.files import make_dir

    (tmp_path / "file").write_text("x")
    with pytest.raises(
        ArtifactError, match=r"cannot write .*file/out \(Not a directory\).*a file stands where a directory is needed"
    ):
        make_dir(tmp_path / "file" / "out")
    (tmp_path / "loop").symlink_to(tmp_path / "loop")
    with pytest.raises(ArtifactError, match=r"symbolic-link loop"):
        make_dir(tmp_path / "loop" / "out")
    for code, advice in (
        (errno.ENOSPC, "free disk space"),
        (errno.EROFS, "read-only"),
        (errno.EACCES, "you may write to"),
    ):
        from rladctl.store.files import write_output_error

        assert advice in write_output_error(tmp_path, OSError(code, os.strerror(code))).line()
