"""The artifact contract between stages (DESIGN §3).

An artifact is a directory of ``part-NNNNN.parquet`` files plus ``_manifest.json``, written last and
atomically: its presence means the artifact is complete. Every file goes to a temporary name in the
same directory first and is renamed into place, so a reader never sees half a file.

Resume: every part carries the writer's *fingerprint* (a hash of everything that determines its
content) in its Parquet metadata. A re-run keeps the parts whose fingerprint matches and writes only
the missing ones; a directory holding another run's parts is refused unless ``--overwrite``.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rladctl import __version__
from rladctl.errors import ArtifactError, MissingPathError
from rladctl.store.files import (
    atomic_write,
    atomic_write_json,
    is_temporary,
    make_dir,
    sha256_file,
    writer_alive,
)

# The leading underscore makes pandas, pyarrow and duckdb read the directory itself as a Parquet
# dataset (they skip "_" and "." files). Artifacts written before 0.2 carry the old name.
MANIFEST = "_manifest.json"
OLD_MANIFEST = "manifest.json"
PART_RE = re.compile(r"^part-(\d{5})\.parquet$")
FINGERPRINT_KEY = b"rladctl.fingerprint"


def part_name(index: int) -> str:
    return f"part-{index:05d}.parquet"


# --------------------------------------------------------------------------------------------
# atomic files


def fingerprint(obj: Any) -> str:
    """Stable hash of a JSON-able description of a stage's inputs."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:32]


# --------------------------------------------------------------------------------------------
# writing


@dataclass
class ArtifactWriter:
    """Writes one artifact directory part by part; ``finalize`` writes the manifest.

    ``complete`` is True when the directory already holds a finished artifact with the same
    fingerprint: the stage has nothing to do.
    """

    path: Path
    kind: str
    fingerprint: str
    overwrite: bool = False
    done: set[int] = field(default_factory=set)
    complete: bool = False
    # Only one writer may delete a killed run's temporary files: under torchrun rank 0 does, before
    # the other ranks start (a pid from another node says nothing about whether its writer is alive).
    clean_temporary: bool = True

    def __post_init__(self) -> None:
        self.path = make_dir(Path(self.path))
        manifest_file = manifest_path(self.path)
        if manifest_file.exists():
            try:
                old = read_manifest_file(manifest_file)
            except ArtifactError:  # a damaged manifest must not block --overwrite
                old = None
            if old and old.get("fingerprint") == self.fingerprint and old.get("kind") == self.kind:
                if _parts_intact(self.path, old):
                    self.complete = True
                    return
                manifest_file.unlink()  # a part went missing or changed after the fact: rebuild it
                for entry in old["parts"]:
                    part = self.path / entry["file"]
                    if part.exists() and sha256_file(part) != entry["sha256"]:
                        part.unlink()
            else:
                self._refuse_or_clear(
                    "a complete artifact from a different run" if old else f"an unreadable {MANIFEST}"
                )
        self._scan_parts()

    def _scan_parts(self) -> None:
        for child in sorted(self.path.iterdir()):
            if is_temporary(child):
                if self.clean_temporary and not writer_alive(child):
                    child.unlink(missing_ok=True)  # left by a killed writer; never complete
                continue
            match = PART_RE.match(child.name)
            if not match:
                continue
            if _part_fingerprint(child) != self.fingerprint:
                self._refuse_or_clear("parts from a different run")
                self.done.clear()
                return
            self.done.add(int(match.group(1)))

    def _refuse_or_clear(self, what: str) -> None:
        if not self.overwrite:
            raise ArtifactError(
                f"output directory {self.path} holds {what}",
                None,
                "choose another output directory, or pass --overwrite to replace it",
            )
        # The manifest goes first so the directory never looks complete while being cleared.
        (self.path / MANIFEST).unlink(missing_ok=True)
        (self.path / OLD_MANIFEST).unlink(missing_ok=True)
        for child in self.path.iterdir():
            if PART_RE.match(child.name) or is_temporary(child):
                child.unlink()

    def refresh(self) -> None:
        """Count the parts other ranks have written since (same fingerprint) as done."""
        for child in self.path.iterdir():
            match = PART_RE.match(child.name)
            if match and int(match.group(1)) not in self.done and _part_fingerprint(child) == self.fingerprint:
                self.done.add(int(match.group(1)))

    def write_part(self, index: int, table) -> None:
        import pyarrow.parquet as pq

        meta = dict(table.schema.metadata or {})
        meta[FINGERPRINT_KEY] = self.fingerprint.encode()
        table = table.replace_schema_metadata(meta)
        atomic_write(self.path / part_name(index), lambda tmp: pq.write_table(table, tmp))
        self.done.add(index)

    def finalize(self, num_parts: int, **fields: Any) -> dict[str, Any]:
        """Check every part exists, then write the manifest (last, atomically)."""
        import pyarrow.parquet as pq

        missing = [i for i in range(num_parts) if i not in self.done]
        if missing:
            raise RuntimeError(f"finalize with missing parts {missing[:5]}")  # a bug, not user error
        parts = []
        for i in range(num_parts):
            file = self.path / part_name(i)
            meta = pq.ParquetFile(file)
            if (meta.schema_arrow.metadata or {}).get(FINGERPRINT_KEY, b"").decode() != self.fingerprint:
                # The lock keeps other writers out; this is a part that changed under us all the same.
                raise ArtifactError(
                    f"part {file.name} of {self.path} was written by a different run",
                    None,
                    "re-run the command to write it again",
                )
            parts.append({"file": file.name, "rows": meta.metadata.num_rows, "sha256": sha256_file(file)})
        manifest = {
            "kind": self.kind,
            "schema_version": _schema_version(),
            "rladctl_version": __version__,
            "fingerprint": self.fingerprint,
            "rows": sum(p["rows"] for p in parts),
            "parts": parts,
            "created_unix": round(time.time(), 3),
            **fields,
        }
        atomic_write_json(self.path / MANIFEST, manifest)
        (self.path / OLD_MANIFEST).unlink(missing_ok=True)  # an older run's, superseded
        self.complete = True
        return manifest


def open_writer(path: Path, kind: str, fingerprint: str, overwrite: bool = False) -> ArtifactWriter:
    """An ArtifactWriter on every rank of a torchrun job (just one for a single process).

    Rank 0 opens the directory first: it alone refuses, clears (``--overwrite``) or repairs it, and
    removes a killed run's temporary files. The other ranks open it after, and find what rank 0 left.
    A refusal on rank 0 is raised on every rank, so none waits for the others forever.
    """
    from rladctl import distributed

    writer = distributed.main_only(lambda: ArtifactWriter(Path(path), kind, fingerprint, overwrite))
    return writer or ArtifactWriter(Path(path), kind, fingerprint, overwrite, clean_temporary=False)


def finalize_shared(writer: ArtifactWriter, num_parts: int, **fields: Any) -> None:
    """``writer.finalize`` once every rank has written its parts: rank 0 writes the manifest.

    Call it on every rank; it returns on all of them once the manifest exists.
    """
    from rladctl import distributed

    def finalize() -> None:
        writer.refresh()  # the parts the other ranks wrote
        writer.finalize(num_parts, **fields)

    distributed.barrier()  # every rank's parts are in place
    distributed.main_only(finalize)
    writer.complete = True


def _parts_intact(path: Path, manifest: dict[str, Any]) -> bool:
    return all((path / p["file"]).exists() and sha256_file(path / p["file"]) == p["sha256"] for p in manifest["parts"])


def _schema_version() -> int:
    from rladctl.store.schema import SCHEMA_VERSION

    return SCHEMA_VERSION


def _part_fingerprint(path: Path) -> str | None:
    import pyarrow.parquet as pq

    try:
        meta = pq.read_schema(path).metadata or {}
    except Exception:  # truncated or foreign file: not one of ours, treat as another run's
        return None
    value = meta.get(FINGERPRINT_KEY)
    return value.decode() if value else None


# --------------------------------------------------------------------------------------------
# reading


def manifest_path(directory: Path) -> Path:
    """The manifest of ``directory``: ``_manifest.json``, or an older artifact's ``manifest.json``."""
    current = Path(directory) / MANIFEST
    if current.exists():
        return current
    old = Path(directory) / OLD_MANIFEST
    return old if old.exists() else current


def read_manifest_file(path: Path, need_parts: bool = True) -> dict[str, Any]:
    """The parsed and checked manifest; ``need_parts=False`` also takes a checkpoint's (no parts).

    A manifest is data from disk, not trusted: the fields readers use are checked for type and range,
    and every part file must be a plain part name inside the artifact (no path reaches outside it).
    """
    try:
        data = json.loads(path.read_text(encoding="utf-8"), parse_constant=_refuse_constant)
    except (OSError, ValueError) as exc:  # JSONDecodeError, UnicodeDecodeError and NaN/Infinity are ValueErrors
        raise ArtifactError(
            f"manifest {path} is unreadable ({exc})", None, "re-run the stage that wrote it with --overwrite"
        ) from None
    if not isinstance(data, dict) or "kind" not in data or (need_parts and "parts" not in data):
        raise ArtifactError(
            f"manifest {path} is not an rladctl manifest", None, "point at a directory written by rladctl"
        )
    problem = manifest_problem(data)
    if problem:
        raise ArtifactError(f"manifest {path} is invalid: {problem}", None, "re-create the artifact with --overwrite")
    return data


def _refuse_constant(name: str):
    raise ValueError(f"{name} is not JSON")


def manifest_problem(data: dict[str, Any]) -> str | None:
    """What is wrong with a parsed manifest's fields, or None."""
    if not isinstance(data.get("kind"), str):
        return f"kind is {data.get('kind')!r}, not a string"
    for key in ("schema_version", "rows"):
        value = data.get(key, 0)
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            return f"{key} is {value!r}, not an integer >= 0"
    for key in ("sampling", "model", "student", "task", "prompt", "timings"):
        if data.get(key) is not None and not isinstance(data[key], dict):
            return f"{key} is {type(data[key]).__name__} {data[key]!r}, not a table"
    temperature = (data.get("sampling") or {}).get("temperature", 1.0)
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or not temperature > 0:
        return f"sampling.temperature is {temperature!r}, not a number > 0"
    if "parts" not in data:
        return None
    parts = data["parts"]
    if not isinstance(parts, list):
        return f"parts is {type(parts).__name__} {parts!r}, not a list"
    for i, entry in enumerate(parts):
        if not isinstance(entry, dict):
            return f"parts[{i}] is {entry!r}, not a table"
        file, rows, digest = entry.get("file"), entry.get("rows"), entry.get("sha256")
        # A bare part name: nothing in a manifest may point outside its own directory.
        if not isinstance(file, str) or not PART_RE.match(file):
            return f"parts[{i}].file is {file!r}, not a part file name such as part-00000.parquet"
        if isinstance(rows, bool) or not isinstance(rows, int) or rows < 0:
            return f"parts[{i}].rows is {rows!r}, not an integer >= 0"
        if not isinstance(digest, str) or not re.fullmatch(r"[0-9a-f]{64}", digest):
            return f"parts[{i}].sha256 is {digest!r}, not a sha256 hex digest"
    files = [entry["file"] for entry in parts]
    if len(set(files)) != len(files):
        return "a part file is listed twice"
    if "rows" in data and data["rows"] != sum(entry["rows"] for entry in parts):
        return f"rows is {data['rows']} but its parts hold {sum(entry['rows'] for entry in parts)}"
    return None


@dataclass(frozen=True)
class Artifact:
    """A complete, verified artifact directory."""

    path: Path
    manifest: dict[str, Any]

    @property
    def kind(self) -> str:
        return self.manifest["kind"]

    @property
    def rows(self) -> int:
        return int(self.manifest["rows"])

    @property
    def sha256(self) -> str:
        return sha256_file(manifest_path(self.path))

    def part_paths(self) -> list[Path]:
        return [self.path / p["file"] for p in self.manifest["parts"]]

    def read_part(self, index: int, columns: list[str] | None = None):
        import pyarrow.parquet as pq

        return pq.read_table(self.part_paths()[index], columns=columns)

    def iter_parts(self, columns: list[str] | None = None) -> Iterator[tuple[int, Any]]:
        for index in range(len(self.manifest["parts"])):
            yield index, self.read_part(index, columns)

    def table(self, columns: list[str] | None = None):
        import pyarrow as pa

        tables = [t for _, t in self.iter_parts(columns)]
        # Parts from another writer may differ in nullability alone: unify their schemas.
        return pa.concat_tables(tables, promote_options="default") if tables else None

    @property
    def content_id(self) -> str:
        """Hash of the data alone (kind + part checksums): unlike the manifest's own sha256 it does
        not change with timings, so downstream fingerprints stay stable across identical re-runs."""
        return fingerprint({"kind": self.kind, "parts": [p["sha256"] for p in self.manifest["parts"]]})

    def reference(self) -> dict[str, str]:
        """How a downstream manifest names this artifact as an input."""
        return {
            "path": str(self.path),
            "kind": self.kind,
            "manifest_sha256": self.sha256,
            "content_id": self.content_id,
        }


def open_artifact(path: str | Path, kinds: Iterable[str], *, verify: bool = True, role: str = "input") -> Artifact:
    """Open a complete artifact of one of ``kinds``; refuse anything incomplete or corrupt."""
    from rladctl.store.schema import SCHEMA_VERSION, schema_for

    path = Path(path)
    kinds = tuple(kinds)
    if not path.is_dir():
        raise MissingPathError(
            f"{role} artifact {path} does not exist", None, "check the path, or run the stage that writes it"
        )
    manifest_file = manifest_path(path)
    if not manifest_file.exists():
        raise ArtifactError(
            f"{role} artifact {path} is incomplete (no {MANIFEST})",
            None,
            "re-run the stage that writes it: it resumes and finishes the artifact",
        )
    # A checkpoint given where data is expected is refused by its kind, not as "not rladctl's".
    manifest = read_manifest_file(manifest_file, need_parts=False)
    if manifest["kind"] not in kinds:
        raise ArtifactError(
            f"{role} artifact {path} is of kind '{manifest['kind']}'",
            None,
            f"this command needs {' or '.join(kinds)}",
        )
    if "parts" not in manifest:
        raise ArtifactError(
            f"manifest {manifest_file} lists no parts", None, "point at an artifact directory written by rladctl"
        )
    if manifest.get("schema_version", 0) > SCHEMA_VERSION:
        raise ArtifactError(
            f"{role} artifact {path} has schema version {manifest['schema_version']}",
            None,
            "upgrade rladctl to read it",
        )
    artifact = Artifact(path, manifest)
    if verify:
        _verify_parts(artifact)
        _verify_columns(artifact, schema_for(manifest["kind"]))
    return artifact


def _verify_parts(artifact: Artifact) -> None:
    for entry in artifact.manifest["parts"]:
        file = artifact.path / entry["file"]
        if not file.exists():
            raise ArtifactError(f"artifact part {file} is missing", None, "re-create the artifact with --overwrite")
        if sha256_file(file) != entry["sha256"]:
            raise ArtifactError(
                f"artifact part {file} does not match its manifest checksum",
                None,
                "the file was changed or damaged after it was written; re-create the artifact with --overwrite",
            )


def _verify_columns(artifact: Artifact, expected) -> None:
    import pyarrow.parquet as pq

    for file in artifact.part_paths():
        try:
            schema = pq.read_schema(file)
        except Exception as exc:
            raise ArtifactError(
                f"artifact part {file} is not a readable Parquet file ({exc})",
                None,
                "re-create the artifact with --overwrite",
            ) from None
        for fld in expected:
            if fld.name not in schema.names:
                raise ArtifactError(
                    f"column '{fld.name}' is missing",
                    f"in {file}",
                    "write the artifact with rladctl's schema (see rladctl/schema.py)",
                )
            got = schema.field(fld.name).type
            if not got.equals(fld.type):
                raise ArtifactError(
                    f"column '{fld.name}' has type {got}, expected {fld.type}",
                    f"in {file}",
                    "cast the column to the schema's type",
                )


def validate_rewards(table, where: str) -> None:
    """Rewards, where the table has them, must be finite: a NaN would pass into every mean."""
    import numpy as np

    from rladctl.store.schema import PROMPT_ID, REWARD

    if REWARD not in table.column_names:
        return
    rewards = table[REWARD].to_numpy(zero_copy_only=False).astype(np.float64)
    if not np.isfinite(rewards).all():
        i = int(np.flatnonzero(~np.isfinite(rewards))[0])
        raise ArtifactError(
            f"column '{REWARD}' holds {rewards[i]} in row {i} (prompt_id {table[PROMPT_ID][i].as_py()})",
            f"in {where}",
            "re-create the artifact; rewards must be finite numbers",
        )


def validate_token_columns(table, columns: Iterable[str], where: str) -> None:
    """Per-token columns must match completion_token_ids in length and hold finite values; token
    ids must be >= 0 and rewards finite (another tool's Parquet is read with the same schema)."""
    import numpy as np
    import pyarrow.compute as pc

    from rladctl.store.schema import COMPLETION_TOKEN_IDS, PROMPT_ID, PROMPT_TOKEN_IDS, SAMPLE_IDX

    for column in (PROMPT_TOKEN_IDS, COMPLETION_TOKEN_IDS):
        if column in table.column_names:
            rows, ids = _flatten_with_rows(table[column])
            if len(ids) and ids.min() < 0:
                i = int(rows[np.flatnonzero(ids < 0)[0]])
                raise ArtifactError(
                    f"column '{column}' holds the token id {int(ids.min())} (first negative id in row {i}, "
                    f"prompt_id {table[PROMPT_ID][i].as_py()})",
                    f"in {where}",
                    "re-create the artifact; token ids are >= 0",
                )
    validate_rewards(table, where)
    lengths = pc.list_value_length(table[COMPLETION_TOKEN_IDS]).to_numpy(zero_copy_only=False)
    for column in columns:
        if column not in table.column_names:
            continue
        got = pc.list_value_length(table[column]).to_numpy(zero_copy_only=False)
        bad = np.flatnonzero(got != lengths)
        if len(bad):
            i = int(bad[0])
            raise ArtifactError(
                f"row {i} (prompt_id {table[PROMPT_ID][i].as_py()}, sample {table[SAMPLE_IDX][i].as_py()}) has {got[i]} values in '{column}' but {lengths[i]} completion tokens",
                f"in {where}",
                "re-create the artifact; per-token columns must match completion_token_ids",
            )
        rows, flat = _flatten_with_rows(table[column])
        if flat.dtype.kind == "f" and not np.isfinite(flat).all():
            i = int(rows[np.flatnonzero(~np.isfinite(flat))[0]])
            raise ArtifactError(
                f"column '{column}' holds NaN or inf (first in row {i}, prompt_id {table[PROMPT_ID][i].as_py()})",
                f"in {where}",
                "re-create the artifact; log-probs must be finite",
            )


def _flatten_with_rows(column):
    """All leaf values of a (possibly nested) list column and the row each came from.

    Nested columns (top-k: [T][k] per row) are flattened to the leaves, so their NaNs are found too.
    """
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    values = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    rows = np.arange(len(values))
    while pa.types.is_list(values.type) or pa.types.is_large_list(values.type):
        rows = rows[pc.list_parent_indices(values).to_numpy(zero_copy_only=False)]
        values = pc.list_flatten(values)
    return rows, values.to_numpy(zero_copy_only=False)
