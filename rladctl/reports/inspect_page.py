"""``rladctl inspect --html``: one self-contained page over the selected completions.

The page is one HTML file with inline CSS and JS and no network access. Its data is embedded once,
as one JSON document in ``<script type="application/json" id="rladctl-inspect">``:

    meta     artifact, kind, alpha, clamp, shading thresholds, the summary numbers
    prompts  each distinct prompt text once; rows point into it
    vocab    {"ids": [...], "texts": [...]}: the text of every token id used, or null (ids only)
    rows     one array per column, [R] each: row, prompt, prompt_id, sample_idx, reward, advantage,
             correct, finish_reason, tokens, block, offset, and the row_stats means
    blocks   the tokens, in blocks of consecutive rows: {"rows", "tokens", "data"}
    plots    histogram of d (or of lp when unscored) for correct vs wrong completions, and clamp
             fraction (or mean lp) by token position, computed here and drawn by the page as SVG

A block's "data" is base64 of zlib-deflated bytes holding, for its n tokens, each array as little-
endian byte planes (all low bytes, then the next byte, ...; planes deflate far better than the
interleaved bytes): token ids (``meta.id_bytes`` bytes each), lp, then lp_T and log r when scored
(int16, in units of 1 / QUANTUM nat, saturating at +-64 nats), then the shade (uint8, shade + 4).
The page inflates a block (DecompressionStream) only when a row of it is shown, so a page of the
paper's scale (2,048 completions x 8K tokens) opens as fast as its JSON parses.
``read_page_data`` decodes a written page back into per-row token arrays (tests and scripts).
"""

from __future__ import annotations

import base64
import json
import re
import zlib
from pathlib import Path
from typing import Any

import numpy as np

from rladctl.reports.inspect import GAP_SHADES, MAX_SHADE, SURPRISE_SHADES, Inspection, summary

QUANTUM = 512  # log-probs travel as int16 multiples of 1/512 nat: +-64 nats, 0.001 nat resolution
BLOCK_TOKENS = 1 << 18  # tokens per block: one block inflates in a few ms, a page needs a few blocks
HIST_BINS = 48
POSITION_BINS = 64
_INT16 = np.iinfo(np.int16)


def write_page(insp: Inspection, rows: list[int], out: str | Path) -> dict[str, Any]:
    """Write the page for ``rows`` to ``out`` atomically; returns {path, rows, tokens, bytes}."""
    from rladctl.reports.inspect_page_template import render
    from rladctl.store.files import atomic_write_bytes, make_dir

    out = Path(out)
    make_dir(out.parent)
    data = page_data(insp, rows)
    text = json.dumps(data, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    # Inside <script>, '<' could open "</script>"; as \u003c it is the same JSON string.
    html = render(text.replace("<", "\\u003c"), title=f"rladctl inspect {insp.path.name}")
    payload = html.encode("utf-8")
    atomic_write_bytes(out, payload)
    return {"path": str(out), "rows": len(rows), "tokens": int(sum(data["rows"]["tokens"])), "bytes": len(payload)}


def page_data(insp: Inspection, rows: list[int]) -> dict[str, Any]:
    """The JSON document the page embeds (module docstring)."""
    rows = [int(i) for i in rows]
    prompt_index: dict[str, int] = {}
    prompts: list[str] = []
    for i in rows:
        if insp.prompts[i] not in prompt_index:
            prompt_index[insp.prompts[i]] = len(prompts)
            prompts.append(insp.prompts[i])
    blocks, block_of, offset_in = _blocks(insp, rows)
    stats = insp.row_stats
    columns: dict[str, list] = {
        "row": rows,
        "prompt": [prompt_index[insp.prompts[i]] for i in rows],
        "prompt_id": [insp.prompt_ids[i] for i in rows],
        "sample_idx": [int(insp.sample_idx[i]) for i in rows],
        "reward": _rounded(insp.rewards[rows]),
        "advantage": _rounded(insp.advantages[rows]),
        "correct": [int(insp.correct[i]) for i in rows],
        "finish_reason": [insp.finish_reasons[i] for i in rows],
        "block": block_of,
        "offset": offset_in,
    }
    columns |= {
        name: _rounded(values[rows]) if values.dtype.kind == "f" else values[rows].tolist()
        for name, values in stats.items()
    }
    used = np.unique(np.concatenate([insp.token_ids[insp.span(i)] for i in rows])) if rows else np.zeros(0, int)
    vocab = None if insp.vocab is None else {"ids": used.tolist(), "texts": [insp.vocab[t] for t in used.tolist()]}
    return {
        "format": 1,
        "meta": {
            "artifact": str(insp.path),
            "kind": insp.kind,
            "scored": insp.scored,
            "alpha": insp.alpha,
            "clamp": insp.clamp,
            "quantum": QUANTUM,
            "id_bytes": _id_bytes(insp),
            "max_shade": MAX_SHADE,
            "gap_shades": list(GAP_SHADES),
            "surprise_shades": list(SURPRISE_SHADES),
            "tokenizer": insp.tokenizer,
            "summary": summary(insp, rows),
        },
        "prompts": prompts,
        "vocab": vocab,
        "rows": columns,
        "blocks": blocks,
        "plots": plots(insp, rows),
    }


def _blocks(insp: Inspection, rows: list[int]) -> tuple[list[dict], list[int], list[int]]:
    """Rows in order, cut into blocks of about BLOCK_TOKENS tokens; (blocks, block of each row,
    offset of each row's first token in its block)."""
    blocks: list[dict] = []
    block_of, offset_in, pending, size = [], [], [], 0
    for i in rows:
        n = insp.span(i).stop - insp.span(i).start
        if pending and size + n > BLOCK_TOKENS:
            blocks.append(_encode_block(insp, pending))
            pending, size = [], 0
        block_of.append(len(blocks))
        offset_in.append(size)
        pending.append(i)
        size += n
    if pending:
        blocks.append(_encode_block(insp, pending))
    return blocks, block_of, offset_in


def _encode_block(insp: Inspection, rows: list[int]) -> dict[str, Any]:
    take = np.concatenate([np.arange(insp.span(i).start, insp.span(i).stop) for i in rows])  # [n]
    arrays = [
        _planes(insp.token_ids[take].astype("<u4"), _id_bytes(insp)),
        _planes(_quantised(insp.sampler_logprobs[take])),
    ]
    if insp.scored:
        arrays += [_planes(_quantised(insp.teacher_logprobs[take])), _planes(_quantised(np.log(insp.ratio[take])))]
    arrays.append((insp.shades[take] + MAX_SHADE).astype(np.uint8).tobytes())
    data = base64.b64encode(zlib.compress(b"".join(arrays), 6)).decode("ascii")
    return {"rows": len(rows), "tokens": int(len(take)), "data": data}


def _id_bytes(insp: Inspection) -> int:
    top = int(insp.token_ids.max()) if len(insp.token_ids) else 0
    return next(k for k in (1, 2, 3, 4) if top < 256**k)


def _quantised(values: np.ndarray) -> np.ndarray:
    scaled = np.rint(values.astype(np.float64) * QUANTUM)
    return np.clip(scaled, _INT16.min, _INT16.max).astype("<i2")


def _planes(values: np.ndarray, width: int | None = None) -> bytes:
    """Little-endian byte planes of ``values``, keeping the ``width`` low bytes of each."""
    grid = values.view(np.uint8).reshape(-1, values.itemsize)[:, : width or values.itemsize]  # [n, width]
    return np.ascontiguousarray(grid.T).tobytes()


def _rounded(values: np.ndarray, digits: int = 6) -> list[float]:
    return [float(f"{v:.{digits}g}") for v in values.tolist()]


# --------------------------------------------------------------------------------------------
# summary plots (numbers here; the page draws them)


def plots(insp: Inspection, rows: list[int]) -> dict[str, Any]:
    """Histogram of d (lp when unscored) per token, correct vs wrong completions, each normalised to
    a fraction of its tokens; clamp fraction (mean lp when unscored) in bins of token position."""
    idx = np.asarray(rows, dtype=np.int64)
    picked = np.zeros(insp.rows, dtype=bool)
    picked[idx] = True
    counts = np.diff(insp.offsets)
    tokens_N = np.repeat(picked, counts)  # [N] bool
    correct_N = np.repeat(insp.correct, counts)[tokens_N]
    position_N = (np.arange(len(insp.token_ids)) - np.repeat(insp.offsets[:-1], counts))[tokens_N]
    if insp.scored:
        values_N, lo, hi = insp.teacher_gap[tokens_N], -3.0 * insp.clamp, 3.0 * insp.clamp
        by_position_N = insp.clamped[tokens_N].astype(np.float64)
        hist_title, position_title = "lp - lp_T per token", "fraction of tokens clamped (|lp - lp_T| > c)"
    else:
        values_N, lo, hi = insp.sampler_logprobs[tokens_N].astype(np.float64), -8.0, 0.0
        by_position_N = values_N
        hist_title, position_title = "sampler log-prob per token", "mean sampler log-prob"
    edges = np.linspace(lo, hi, HIST_BINS + 1)
    clipped = np.clip(values_N, lo, hi)  # the end bins hold everything beyond them

    def density(mask: np.ndarray) -> list[float]:
        hist = np.histogram(clipped[mask], bins=edges)[0]
        return _rounded(hist / max(int(mask.sum()), 1))

    longest = int(position_N.max()) + 1 if len(position_N) else 1
    width = -(-longest // POSITION_BINS)  # ceil
    bin_N = position_N // width
    n_bins = int(bin_N.max()) + 1 if len(bin_N) else 0
    count_b = np.bincount(bin_N, minlength=n_bins)
    value_b = np.bincount(bin_N, weights=by_position_N, minlength=n_bins) / np.maximum(count_b, 1)
    return {
        "histogram": {
            "title": hist_title,
            "edges": _rounded(edges),
            "correct": density(correct_N),
            "wrong": density(~correct_N),
            "correct_tokens": int(correct_N.sum()),
            "wrong_tokens": int((~correct_N).sum()),
            "marks": [-insp.clamp, insp.clamp] if insp.scored else [],
        },
        "by_position": {
            "title": position_title,
            "bin_width": int(width),
            "values": _rounded(value_b),
            "tokens": count_b.tolist(),
            "fraction": insp.scored,
        },
    }


# --------------------------------------------------------------------------------------------
# reading a page back


def read_page_data(path: str | Path) -> dict[str, Any]:
    """The JSON document a page embeds, with its blocks decoded: ``rows_tokens`` is one dict per
    row (page order) of token_ids, and sampler_logprobs, teacher_logprobs, ratio (to 1/QUANTUM nat),
    shades."""
    from rladctl.reports.inspect_page_template import DATA_ID

    text = Path(path).read_text(encoding="utf-8")
    found = re.search(rf'<script type="application/json" id="{DATA_ID}">(.*?)</script>', text, re.S)
    if found is None:
        raise ValueError(f"{path} holds no rladctl inspect data")
    data = json.loads(found.group(1))
    meta, per_row = data["meta"], []
    for b, block in enumerate(data["blocks"]):
        arrays = _decode_block(block, meta)
        for r in [r for r, blk in enumerate(data["rows"]["block"]) if blk == b]:
            start = data["rows"]["offset"][r]
            span = slice(start, start + data["rows"]["tokens"][r])
            per_row.append({k: v[span] for k, v in arrays.items()})
    data["rows_tokens"] = per_row
    return data


def _decode_block(block: dict[str, Any], meta: dict[str, Any]) -> dict[str, np.ndarray]:
    raw = np.frombuffer(zlib.decompress(base64.b64decode(block["data"])), dtype=np.uint8)
    n, at = block["tokens"], 0

    def take(width: int) -> np.ndarray:
        nonlocal at
        planes = raw[at : at + width * n].reshape(width, n)
        at += width * n
        return planes

    id_planes = take(meta["id_bytes"])
    out = {"token_ids": sum(id_planes[k].astype(np.int64) << (8 * k) for k in range(len(id_planes)))}
    names = ["sampler_logprobs"] + (["teacher_logprobs", "log_ratio"] if meta["scored"] else [])
    for name in names:
        planes = take(2)
        out[name] = (planes[0].astype(np.uint16) | (planes[1].astype(np.uint16) << 8)).view(np.int16) / meta["quantum"]
    if meta["scored"]:
        out["ratio"] = np.exp(out.pop("log_ratio"))
    out["shades"] = take(1)[0].astype(np.int64) - meta["max_shade"]
    return out
