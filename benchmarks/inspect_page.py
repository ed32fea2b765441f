"""Size and load time of the `rladctl inspect --html` page, up to the paper's scale (2,048 x 8K tokens).

    python benchmarks/inspect_page.py                         # 64x1024, 512x4096, 2048x8192
    python benchmarks/inspect_page.py --scales 2048x8192 --keep /tmp/inspect-bench

For each scale ROWSxTOKENS it writes a synthetic scored artifact (every completion ROWS tokens long,
G = 8 per prompt, ids drawn Zipf-like from Qwen3's 151,936-id vocabulary, lp mostly near 0 with a
long tail, lp_T = lp + noise so that about a fifth of the tokens are clamped, each id decoded to a
2-6 letter string as a tokenizer would), then times the library's `inspect_artifact` + `write_page`
(what `rladctl inspect ART --html OUT` runs) and opens the page in headless Chromium. The page sets
data-parsed-ms (HTML and JSON parsed) and data-ready-ms (first page of 10 completions on screen),
both in seconds here since navigation started: the load time a user waits. "sorted ready s" opens
it sorted by mean |lp - lp_T| (every row sorted, a first page from blocks all over the file).
Needs /usr/bin/chromium for the last three columns.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

CHROMIUM = Path("/usr/bin/chromium")
VOCAB = 151_936
GROUP = 8


def make_artifact(
    out: Path, rows: int, tokens: int, seed: int = 0, rows_per_part: int = 256, model_dir: str | None = None
) -> Path:
    """A complete scored artifact of ``rows`` completions of ``tokens`` tokens each (synthetic numbers)."""
    import pyarrow as pa

    from rladctl.store import schema as S
    from rladctl.store.artifacts import ArtifactWriter

    rng = np.random.default_rng(seed)
    writer = ArtifactWriter(out, S.SCORED, f"synthetic-{rows}x{tokens}-{seed}", overwrite=True)
    parts = range(0, rows, rows_per_part)
    for index, start in enumerate(parts):
        n = min(rows_per_part, rows - start)
        ids = np.minimum(rng.zipf(1.3, n * tokens) - 1, VOCAB - 1).astype(np.int32)  # [n * T]
        near_zero = rng.random(n * tokens) < 0.7
        lp = np.where(near_zero, -rng.uniform(0, 0.05, n * tokens), -rng.exponential(1.5, n * tokens))
        lp = lp.astype(np.float32)
        lp_teacher = np.minimum(lp + rng.normal(0, 0.8, n * tokens), 0).astype(np.float32)
        offsets = pa.array(np.arange(n + 1, dtype=np.int32) * tokens)
        group = (start + np.arange(n)) // GROUP
        table = pa.table(
            {
                S.PROMPT_ID: [f"p{g:05d}" for g in group],
                S.SAMPLE_IDX: pa.array((start + np.arange(n)) % GROUP, pa.int32()),
                S.TASK: ["synthetic"] * n,
                S.TASK_METADATA: ["{}"] * n,
                S.PROMPT: [f"synthetic prompt {g}: what is {g} + {g}?" for g in group],
                S.PROMPT_TOKEN_IDS: pa.array([[1, 2, 3]] * n, pa.list_(pa.int32())),
                S.COMPLETION: ["(synthetic)"] * n,
                S.COMPLETION_TOKEN_IDS: _lists(offsets, ids),
                S.SAMPLER_LOGPROBS: _lists(offsets, lp),
                S.FINISH_REASON: [S.FINISH_LENGTH] * n,
                S.REWARD: pa.array(rng.integers(0, 2, n), pa.float32()),
                S.ANSWER: ["0"] * n,
                S.EXTRACTED: ["0"] * n,
                S.POLICY_STEP: pa.array([0] * n, pa.int32()),
                S.TEACHER_LOGPROBS: _lists(offsets, lp_teacher),
            },
            schema=S.scored_schema(),
        )
        writer.write_part(index, table)
    writer.finalize(len(parts), model={"path": model_dir})
    return out


def _lists(offsets, values: np.ndarray):
    import pyarrow as pa

    return pa.ListArray.from_arrays(offsets, pa.array(values))


def fake_vocab(token_ids: np.ndarray, seed: int = 0) -> dict[int, str]:
    """A 2-6 letter string per id used, standing in for a tokenizer's decoded text."""
    rng = np.random.default_rng(seed)
    ids = np.unique(token_ids).tolist()
    letters = np.array(list("abcdefghijklmnopqrstuvwxyz "))
    return {i: "".join(rng.choice(letters, rng.integers(2, 7))) for i in ids}


def chromium_load(page: Path, profile: Path, state: str = "") -> dict[str, float]:
    """(parsed, ready) seconds since navigation, as the page itself measured them; ``state`` is the
    page's address fragment (e.g. sort=disagreement&desc=1: sort every row before the first page)."""
    cmd = [
        str(CHROMIUM),
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--no-first-run",
        f"--user-data-dir={profile}",
        "--window-size=1400,1000",
        "--virtual-time-budget=60000",
        "--dump-dom",
        page.resolve().as_uri() + (f"#{state}" if state else ""),
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    body = re.search(r"<body([^>]*)>", done.stdout)
    attrs = dict(re.findall(r'data-([\w-]+)="([^"]*)"', body.group(1))) if body else {}
    if "error" in attrs or "ready-ms" not in attrs:
        sys.exit(f"{page}: the page did not render: {attrs.get('error', done.stderr[-2000:])}")
    return {"parsed_s": float(attrs["parsed-ms"]) / 1e3, "ready_s": float(attrs["ready-ms"]) / 1e3}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scales", default="64x1024,512x4096,2048x8192", help="comma-separated ROWSxTOKENS")
    parser.add_argument("--keep", type=Path, default=None, help="keep artifacts and pages under this directory")
    args = parser.parse_args()

    from rladctl.reports.inspect import inspect_artifact, select_rows
    from rladctl.reports.inspect_page import write_page

    root = args.keep or Path(tempfile.mkdtemp(prefix="rladctl-inspect-bench-"))
    root.mkdir(parents=True, exist_ok=True)
    names = ("rows x tokens", "tokens", "page MiB", "B/token", "write s", "parsed s", "ready s", "sorted ready s")
    widths = (15, 12, 9, 8, 8, 9, 8, 15)
    print(" ".join(f"{name:>{w}}" for name, w in zip(names, widths)))
    try:
        for scale in args.scales.split(","):
            rows, tokens = (int(x) for x in scale.lower().split("x"))
            artifact = make_artifact(root / f"scored-{rows}x{tokens}", rows, tokens)
            started = time.perf_counter()
            insp = inspect_artifact(artifact)
            insp.vocab = fake_vocab(insp.token_ids)  # the synthetic manifest names no tokenizer
            page = write_page(insp, select_rows(insp), root / f"inspect-{rows}x{tokens}.html")
            write_s = time.perf_counter() - started
            cells = [
                f"{rows:,} x {tokens:,}",
                f"{page['tokens']:,}",
                f"{page['bytes'] / 2**20:.1f}",
                f"{page['bytes'] / page['tokens']:.2f}",
                f"{write_s:.1f}",
            ]
            if CHROMIUM.exists():
                plain = chromium_load(Path(page["path"]), root / "profile")
                ranked = chromium_load(Path(page["path"]), root / "profile", "sort=disagreement&desc=1")
                cells += [f"{plain['parsed_s']:.2f}", f"{plain['ready_s']:.2f}", f"{ranked['ready_s']:.2f}"]
            else:
                cells += ["-", "-", "-"]
            print(" ".join(f"{c:>{w}}" for c, w in zip(cells, widths)), flush=True)
            del insp
    finally:
        if args.keep is None:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
