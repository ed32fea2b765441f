"""docs/results.md: the verdict on the page is the one its own numbers give."""

from __future__ import annotations

import re
from pathlib import Path

from rladctl.reports.compare_report import mean_column, ordering_verdict

PAGE = Path(__file__).resolve().parents[1] / "docs" / "results.md"


def section(text: str, title: str) -> str:
    return text.split(f"## {title}\n", 1)[1].split("\n## ", 1)[0].strip()


def test_the_verdict_is_computed_from_hand_made_numbers():
    stats = {"rlad": (0.500, 0.010), "kdrl": (0.450, 0.020), "grpo": (0.440, 0.005), "base": (0.400, 0.0)}
    assert ordering_verdict(stats).splitlines() == [
        "The paper's ordering (RLAD > KDRL > GRPO > base on Mean@K, gaps larger than the spread) does NOT hold here.",
        "- rlad vs kdrl: +0.050 Mean@K (above, gap larger than the spread)",
        "- kdrl vs grpo: +0.010 Mean@K (not clearly above)",  # 0.010 is inside kdrl's spread of 0.020
        "- grpo vs base: +0.040 Mean@K (above, gap larger than the spread)",
        "- highest Mean@K: rlad (0.500 ± 0.010)",
    ]
    stats["kdrl"] = (0.470, 0.010)
    assert ordering_verdict(stats).startswith("The paper's ordering (RLAD > KDRL > GRPO > base on Mean@K, gaps larger")
    assert "holds here." in ordering_verdict(stats).splitlines()[0]
    # A gap equal to the spread is not "larger than" it.
    assert "not clearly above" in ordering_verdict({"rlad": (0.410, 0.0), "grpo": (0.400, 0.010)})


def test_the_published_verdict_matches_the_published_table():
    page = PAGE.read_text()
    stats = mean_column(page)
    assert {"base", "offline", "grpo", "kdrl", "opd", "rlad"} <= set(stats), sorted(stats)
    seeds = int(re.search(r"Seeds: (\d+)", page).group(1))
    assert seeds >= 5
    assert section(page, "Verdict") == ordering_verdict(stats)
