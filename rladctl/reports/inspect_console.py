"""``rladctl inspect`` in the terminal: one completion at a time, each token shaded (rich)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from rladctl.reports.inspect import GAP_SHADES, MAX_SHADE, SURPRISE_SHADES, Inspection

if TYPE_CHECKING:
    from rich.console import Console

# Shade -> rich style. Scored: blue where the teacher likes the token more (d < 0), red where less;
# the clamped ends are bold and underlined. Unscored: orange by the sampler's surprise.
GAP_STYLES = {
    -4: "bold underline white on #2166ac",
    -3: "black on #6aa6d2",
    -2: "black on #abd0e8",
    -1: "black on #dcebf5",
    0: "",
    1: "black on #fbe2d5",
    2: "black on #f5b69c",
    3: "black on #e3795c",
    4: "bold underline white on #b2182b",
}
SURPRISE_STYLES = {0: "", 1: "black on #fff2c6", 2: "black on #ffd67a", 3: "black on #fba15a", 4: "white on #d95f02"}
TOP_TOKENS = 8  # the largest disagreements listed under each completion


def print_rows(console: Console, insp: Inspection, rows: list[int]) -> None:
    """A legend, then each row: its numbers, its prompt, its completion with shaded tokens and (when
    scored) the tokens of largest |d| with their lp, lp_T, d and ratio."""
    console.print(legend(insp))
    for i in rows:
        print_row(console, insp, i)


def legend(insp: Inspection):
    from rich.text import Text

    text = Text("colour: ", style="dim")
    if insp.scored:
        c = insp.clamp
        text.append("lp - lp_T  ", style="dim")
        edges = [
            f"< -{c:g}",
            *(f"< -{g * c:g}" for g in reversed(GAP_SHADES)),
            "~0",
            *(f"> {g * c:g}" for g in GAP_SHADES),
            f"> {c:g}",
        ]
        for shade, label in zip(range(-MAX_SHADE, MAX_SHADE + 1), edges):
            text.append(f" {label} ", style=GAP_STYLES[shade])
        text.append(f"   underlined: clamped (|d| > c = {c:g}); blue: the teacher likes the token more", style="dim")
    else:
        text.append("sampler log-prob lp (unscored)  ", style="dim")
        for shade, label in enumerate(["> -0.1", *(f"<= -{s:g}" for s in SURPRISE_SHADES)]):
            text.append(f" {label} ", style=SURPRISE_STYLES[shade])
    return text


def print_row(console: Console, insp: Inspection, i: int) -> None:
    from rich.panel import Panel
    from rich.text import Text

    stats = {k: v[i].item() for k, v in insp.row_stats.items()}
    verdict = (" correct ", "bold white on green") if insp.correct[i] else (" wrong ", "bold white on red")
    head = Text.assemble(
        (f"row {i}", "bold"),
        f"  prompt {insp.prompt_ids[i]}  sample {int(insp.sample_idx[i])}  ",
        verdict,
        f"  reward {insp.rewards[i]:.3g}  A {insp.advantages[i]:+.3f}",
        f"  {stats['tokens']} tokens ({insp.finish_reasons[i]})",
    )
    if insp.scored:
        head.append(
            f"  mean |d| {stats['disagreement']:.3f}  clamped {stats['clamp_frac']:.1%}"
            f"  mean r {stats['ratio_mean']:.3f}  (alpha {insp.alpha:g}, c {insp.clamp:g})"
        )
    console.print()
    console.print(head)
    console.print(Text(insp.prompts[i].rstrip(), style="dim"))
    console.print(Panel(completion_text(insp, i), title="completion", title_align="left", border_style="dim"))
    if insp.scored and stats["tokens"]:
        console.print(top_tokens(insp, i))


def completion_text(insp: Inspection, i: int):
    from rich.text import Text

    span = insp.span(i)
    styles = GAP_STYLES if insp.scored else SURPRISE_STYLES
    texts = insp.token_texts(i) or [f"[{t}]" for t in insp.token_ids[span].tolist()]
    text = Text()
    for piece, shade in zip(texts, insp.shades[span].tolist()):
        text.append(piece.replace("\n", "↵\n") or "∅", style=styles[shade])
    return text


def top_tokens(insp: Inspection, i: int):
    from rich.table import Table

    span = insp.span(i)
    gap = insp.teacher_gap[span]
    order = np.argsort(-np.abs(gap), kind="stable")[:TOP_TOKENS]
    texts = insp.token_texts(i)
    table = Table(title=f"largest |lp - lp_T| in row {i}", title_justify="left", box=None, pad_edge=False)
    for column in ("pos", "token", "id", "lp", "lp_T", "d", "clamped", "ratio"):
        table.add_column(column, justify="left" if column == "token" else "right")
    for t in order.tolist():
        k = span.start + t
        token = repr(texts[t]) if texts else ""
        table.add_row(
            str(t),
            token,
            str(int(insp.token_ids[k])),
            f"{insp.sampler_logprobs[k]:.3f}",
            f"{insp.teacher_logprobs[k]:.3f}",
            f"{gap[t]:+.3f}",
            "yes" if insp.clamped[k] else "",
            f"{insp.ratio[k]:.4f}",
        )
    return table
