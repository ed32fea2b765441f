"""rladctl inspect: its numbers are the artifact's and the objective's, its selectors pick the right
rows, its page holds every token it claims and opens in headless Chromium without an error."""

from __future__ import annotations

import html
import json
import math
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from rladctl.objectives import LossInputs, ObjectiveConfig, trrd_loss
from rladctl.objectives.trrd import trrd_log_ratio
from rladctl.reports import inspect_page
from rladctl.reports.inspect import first_update_ratio, inspect_artifact, select_rows
from rladctl.reports.inspect_page import QUANTUM, read_page_data, write_page
from rladctl.store import schema as S
from rladctl.store.artifacts import MANIFEST, ArtifactWriter, open_artifact

CHROMIUM = Path("/usr/bin/chromium")


def invoke(capsys, monkeypatch, *args: str) -> tuple[int, str, str]:
    """``rladctl ARGS`` in this process through cli.main, as a user meets it: (exit code, stdout, stderr)."""
    from rladctl import cli

    monkeypatch.setattr(sys, "argv", ["rladctl", *args])
    monkeypatch.delenv("RLADCTL_DEBUG", raising=False)
    with pytest.raises(SystemExit) as done:
        cli.main()
    out = capsys.readouterr()
    return done.value.code or 0, out.out, out.err


def one_error_line(code: int, out: str, err: str, *fragments: str) -> str:
    assert code == 2 and out == "", (code, out, err)
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in err, err
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    return lines[0]


# A hand-made scored artifact; every value is exact in float32, so d is exact too.
#   row 0  p0  reward 1  lp [-1, -1, -1]  lp_T [-1.375, -4, -0.25]  d [0.375, 3, -0.75]  clamped [F, T, F]
#   row 1  p0  reward 0  lp [-0.5]        lp_T [-0.5]                d [0]
#   row 2  p1  reward 0  lp [-2, -0.125]  lp_T [-0.125, -0.125]      d [-1.875, 0]      clamped [T, F]
#   row 3  p1  reward 0  no tokens (an empty completion)
# Advantages: p0 has rewards (1, 0): mean 0.5, population std 0.5 -> A = +-0.5 / (0.5 + 1e-6); p1 is all 0 -> A = 0.
# Mean |d|: row 0 (0.375 + 3 + 0.75) / 3 = 1.375, row 1 0, row 2 0.9375, row 3 0 -> --worst 2 is rows 0, 2.
HAND = [
    ("p0", 1.0, [5, 6, 7], [-1.0, -1.0, -1.0], [-1.375, -4.0, -0.25]),
    ("p0", 0.0, [8], [-0.5], [-0.5]),
    ("p1", 0.0, [9, 10], [-2.0, -0.125], [-0.125, -0.125]),
    ("p1", 0.0, [], [], []),
]


def write_hand(path: Path, model_dir: Path | str, kind: str = S.SCORED, **manifest) -> Path:
    import pyarrow as pa

    n = len(HAND)
    columns = {
        S.PROMPT_ID: [r[0] for r in HAND],
        S.SAMPLE_IDX: pa.array([0, 1, 0, 1], pa.int32()),
        S.TASK: ["hand"] * n,
        S.TASK_METADATA: ["{}"] * n,
        S.PROMPT: [f"prompt of {r[0]} =" for r in HAND],
        S.PROMPT_TOKEN_IDS: pa.array([[1, 2]] * n, pa.list_(pa.int32())),
        S.COMPLETION: ["c"] * n,
        S.COMPLETION_TOKEN_IDS: pa.array([r[2] for r in HAND], pa.list_(pa.int32())),
        S.SAMPLER_LOGPROBS: pa.array([r[3] for r in HAND], pa.list_(pa.float32())),
        S.FINISH_REASON: [S.FINISH_STOP] * n,
        S.REWARD: pa.array([r[1] for r in HAND], pa.float32()),
        S.ANSWER: ["1"] * n,
        S.EXTRACTED: ["1"] * n,
        S.POLICY_STEP: pa.array([0] * n, pa.int32()),
    }
    if kind == S.SCORED:
        columns[S.TEACHER_LOGPROBS] = pa.array([r[4] for r in HAND], pa.list_(pa.float32()))
    if kind == S.EVAL:
        columns[S.CORRECT] = [r[1] >= 1.0 for r in HAND]
    writer = ArtifactWriter(path, kind, "hand")
    writer.write_part(0, pa.table(columns, schema=S.schema_for(kind)))
    writer.finalize(1, model={"path": str(model_dir)}, **manifest)
    return path


@pytest.fixture()
def hand(tmp_path, models) -> Path:
    return write_hand(tmp_path / "hand", models["student"])


# --------------------------------------------------------------------------------------------
# the numbers


def test_json_numbers_for_a_row_are_the_artifacts(shards, capsys, monkeypatch):
    from rladctl.models.tokenizer import load_tokenizer

    table = open_artifact(shards["scored"], [S.SCORED]).table()
    i = 5
    code, out, err = invoke(capsys, monkeypatch, "inspect", str(shards["scored"]), "--row", str(i), "--json")
    assert code == 0, err
    report = json.loads(out)
    (row,) = report["rows_shown"]
    assert row["row"] == i and report["summary"]["selected"] == 1 and report["summary"]["rows"] == table.num_rows
    for key, column in (
        ("prompt_id", S.PROMPT_ID),
        ("sample_idx", S.SAMPLE_IDX),
        ("prompt", S.PROMPT),
        ("completion", S.COMPLETION),
        ("finish_reason", S.FINISH_REASON),
        ("reward", S.REWARD),
        ("token_ids", S.COMPLETION_TOKEN_IDS),
        ("sampler_logprobs", S.SAMPLER_LOGPROBS),
        ("teacher_logprobs", S.TEACHER_LOGPROBS),
    ):
        assert row[key] == table[column][i].as_py(), key  # exact: float32 values survive JSON unchanged
    lp, lp_teacher = np.array(row["sampler_logprobs"]), np.array(row["teacher_logprobs"])
    assert row["teacher_gap"] == (lp - lp_teacher).tolist()
    assert row["clamped"] == (np.abs(lp - lp_teacher) > 1.0).tolist()
    assert row["tokens"] == len(row["token_ids"])
    assert row["disagreement"] == pytest.approx(np.abs(lp - lp_teacher).mean())
    tokenizer = load_tokenizer(shards["student"])
    assert row["token_texts"] == [tokenizer.decode([t]) for t in row["token_ids"]]
    # The advantage by a slow loop over the group: (r - mean) / (population std + 1e-6).
    rewards = [r for r, p in zip(table[S.REWARD].to_pylist(), table[S.PROMPT_ID].to_pylist()) if p == row["prompt_id"]]
    mean = sum(rewards) / len(rewards)
    std = math.sqrt(sum((r - mean) ** 2 for r in rewards) / len(rewards))
    want = 0.0 if max(rewards) == min(rewards) else (row["reward"] - mean) / (std + 1e-6)
    assert row["advantage"] == pytest.approx(want, abs=1e-12)


def test_hand_values_and_the_pinned_ratio(hand):
    insp = inspect_artifact(hand)
    assert insp.kind == S.SCORED and insp.rows == 4 and insp.offsets.tolist() == [0, 3, 4, 6, 6]
    assert insp.teacher_gap.tolist() == [0.375, 3.0, -0.75, 0.0, -1.875, 0.0]
    assert insp.clamped.tolist() == [False, True, False, False, True, False]
    # log r = 0.5 * 0 + 0.5 * clamp(d, -1, 1) at the first update (lp = lp_old):
    #   d = 0.375 -> e^0.1875 = 1.2062302494;  d = 3 -> clamp 1 -> e^0.5 = 1.6487212707
    #   d = -0.75 -> e^-0.375 = 0.6872892788
    #   d = 0 -> 1;  d = -1.875 -> clamp -1 -> e^-0.5 = 0.6065306597
    want = [1.2062302494209807, 1.6487212707001282, 0.6872892787909722, 1.0, 0.6065306597126334, 1.0]
    assert insp.ratio.tolist() == pytest.approx(want, abs=1e-15)
    assert insp.advantages.tolist() == pytest.approx([0.5 / 0.500001, -0.5 / 0.500001, 0.0, 0.0], abs=1e-12)
    assert insp.row_stats["disagreement"].tolist() == [1.375, 0.0, 0.9375, 0.0]
    assert insp.row_stats["clamp_frac"].tolist() == pytest.approx([1 / 3, 0.0, 0.5, 0.0])
    # alpha 0.25, c 2: log r = 0.75 * clamp(d, -2, 2): d = 3 -> 1.5 -> e^1.5 = 4.4816890703
    assert inspect_artifact(hand, alpha=0.25, clamp=2.0).ratio[1] == pytest.approx(math.exp(1.5), abs=1e-12)
    # alpha = 1 is GRPO: the ratio is exactly 1 at the first update
    assert inspect_artifact(hand, alpha=1.0).ratio.tolist() == [1.0] * 6


@pytest.mark.parametrize("alpha, clamp", [(0.5, 1.0), (0.0, 0.5), (0.3, 2.0), (1.0, 1.0)])
def test_ratio_equals_the_objectives_ratio(shards, alpha, clamp):
    """inspect's ratio per token is the loss's own exp(log r), on the [B, T] batch train would build,
    and its means are the loss's ratio_mean and teacher_clamp_frac."""
    insp = inspect_artifact(shards["scored"], alpha=alpha, clamp=clamp)
    table = open_artifact(shards["scored"], [S.SCORED]).table()
    lp_rows, teacher_rows = table[S.SAMPLER_LOGPROBS].to_pylist(), table[S.TEACHER_LOGPROBS].to_pylist()
    B, T = len(lp_rows), max(len(r) for r in lp_rows)
    lp_BT = torch.full((B, T), float("-inf"), dtype=torch.float64)  # padding must not matter
    teacher_BT = torch.full((B, T), float("nan"), dtype=torch.float64)
    mask_BT = torch.zeros(B, T, dtype=torch.bool)
    for b, (lp, teacher) in enumerate(zip(lp_rows, teacher_rows)):
        lp_BT[b, : len(lp)], teacher_BT[b, : len(lp)] = torch.tensor(lp), torch.tensor(teacher)
        mask_BT[b, : len(lp)] = True
    inputs = LossInputs(lp_BT, lp_BT.clone(), torch.from_numpy(insp.advantages), mask_BT, teacher_logprobs=teacher_BT)
    cfg = ObjectiveConfig(name="trrd", alpha=alpha, clamp=clamp)
    ratio_BT = torch.exp(trrd_log_ratio(inputs, cfg))
    for b in range(B):
        assert torch.equal(torch.from_numpy(insp.ratio[insp.span(b)]), ratio_BT[b, : len(lp_rows[b])]), b
    metrics = trrd_loss(inputs, cfg).metrics
    assert metrics["ratio_mean"] == pytest.approx(float(insp.ratio.mean()), abs=1e-12)
    assert metrics["teacher_clamp_frac"] == pytest.approx(float(insp.clamped.mean()), abs=1e-12)
    again = first_update_ratio(insp.sampler_logprobs, insp.teacher_logprobs, alpha, clamp)
    assert again.tolist() == insp.ratio.tolist()


# --------------------------------------------------------------------------------------------
# selectors


@pytest.mark.parametrize(
    "selectors, rows",
    [
        ({}, [0, 1, 2, 3]),
        ({"row": 2}, [2]),
        ({"prompt_id": "p1"}, [2, 3]),
        ({"where": "correct"}, [0]),
        ({"where": "wrong"}, [1, 2, 3]),
        ({"where": "clamped"}, [0, 2]),
        ({"worst": 2}, [0, 2]),  # mean |d| 1.375 and 0.9375
        ({"worst": 9}, [0, 2, 1, 3]),  # ties (0, 0) keep artifact order
        ({"prompt_id": "p1", "where": "clamped"}, [2]),
        ({"worst": 1, "where": "wrong"}, [2]),
        ({"row": 1, "where": "correct"}, []),
    ],
)
def test_selectors_pick_the_right_rows(hand, selectors, rows):
    assert select_rows(inspect_artifact(hand), **selectors) == rows


def test_cli_selectors_and_the_terminal_view(hand, capsys, monkeypatch):
    code, out, err = invoke(capsys, monkeypatch, "inspect", str(hand), "--worst", "2", "--json")
    assert code == 0, err
    assert [r["row"] for r in json.loads(out)["rows_shown"]] == [0, 2]
    code, out, err = invoke(capsys, monkeypatch, "inspect", str(hand), "--where", "wrong", "--limit", "2", "--json")
    assert [r["row"] for r in json.loads(out)["rows_shown"]] == [1, 2]
    # The terminal: one completion, its numbers, the tokens of largest |d|, and a hint that more were selected.
    code, out, err = invoke(capsys, monkeypatch, "inspect", str(hand), "--where", "clamped")
    assert code == 0
    assert "row 0" in out and "prompt p0" in out and "correct" in out and "A +1.000" in out and "row 2" not in out
    assert "largest |lp - lp_T| in row 0" in out and "+3.000" in out and "1.6487" in out
    assert err == "1 of 2 selected rows shown: --limit N for more, --html OUT.html for all\n"


def test_unscored_rollouts_are_shaded_by_the_sampler(shards, capsys, monkeypatch):
    code, out, err = invoke(capsys, monkeypatch, "inspect", str(shards["rollouts"]), "--row", "0", "--json")
    assert code == 0, err
    report = json.loads(out)
    assert report["summary"]["kind"] == S.ROLLOUTS and "ratio_mean" not in report["summary"]
    assert "teacher_logprobs" not in report["rows_shown"][0] and report["rows_shown"][0]["sampler_logprobs"]
    prompt_id = report["rows_shown"][0]["prompt_id"]
    code, out, err = invoke(capsys, monkeypatch, "inspect", str(shards["rollouts"]), "--prompt-id", prompt_id)
    assert code == 0 and "sampler log-prob" in out


def test_an_eval_artifact_is_correct_by_its_own_threshold(tmp_path, models):
    assert inspect_artifact(write_hand(tmp_path / "e1", models["student"], S.EVAL)).correct.tolist() == [
        True,
        False,
        False,
        False,
    ]
    zero = write_hand(tmp_path / "e0", models["student"], S.EVAL, eval={"threshold": 0.0})
    assert inspect_artifact(zero).correct.tolist() == [True] * 4


def test_without_the_models_directory_ids_are_shown(tmp_path, capsys, monkeypatch):
    art = write_hand(tmp_path / "hand", tmp_path / "moved-away")
    insp = inspect_artifact(art)
    assert insp.vocab is None and insp.tokenizer is None and insp.token_texts(0) is None
    code, out, err = invoke(capsys, monkeypatch, "inspect", str(art), "--row", "0")
    assert code == 0 and "[5][6][7]" in out


@pytest.mark.parametrize(
    "args, fragments",
    [
        (["--row", "4"], ["row 4 is out of range", "(4 rows)", "pick a row from 0 to 3"]),
        (["--row", "-1"], ["row -1 is out of range"]),
        (["--prompt-id", "p7"], ["prompt id 'p7' is not in the artifact", "it holds 2 prompt ids, such as 'p0'"]),
        (["--prompt-id", "p00"], ["prompt id 'p00' is not in the artifact", "did you mean 'p0'?"]),
        (["--where", "wrnog"], ["unknown filter 'wrnog'", "did you mean 'wrong'?"]),
        (["--worst", "0"], ["worst is 0"]),
        (["--alpha", "1.5"], ["alpha is 1.5", "[0, 1]"]),
        (["--clamp", "0"], ["clamp is 0.0", "> 0"]),
        (["--limit", "0"], ["Invalid value for '--limit'"]),
    ],
)
def test_user_mistakes_are_one_line(hand, capsys, monkeypatch, args, fragments):
    one_error_line(*invoke(capsys, monkeypatch, "inspect", str(hand), *args), *fragments)


def test_artifact_mistakes_are_one_line(tmp_path, shards, capsys, monkeypatch):
    one_error_line(*invoke(capsys, monkeypatch, "inspect", str(tmp_path / "nope")), "does not exist")
    (tmp_path / "half").mkdir()
    one_error_line(*invoke(capsys, monkeypatch, "inspect", str(tmp_path / "half")), "is incomplete", MANIFEST)
    for option in (["--worst", "2"], ["--where", "clamped"]):
        one_error_line(
            *invoke(capsys, monkeypatch, "inspect", str(shards["rollouts"]), *option),
            "needs teacher log-probs",
            "unscored rollouts artifact",
            "score-teacher",
        )


# --------------------------------------------------------------------------------------------
# the page


def check_page_tokens(page: Path, insp, rows: list[int]) -> dict:
    """The page's embedded JSON holds exactly ``rows``, and every token of each, with its numbers."""
    data = read_page_data(page)
    assert data["rows"]["row"] == rows and len(data["rows_tokens"]) == len(rows)
    texts = dict(zip(data["vocab"]["ids"], data["vocab"]["texts"])) if data["vocab"] else None
    for i, got in zip(rows, data["rows_tokens"]):
        span = insp.span(i)
        assert got["token_ids"].tolist() == insp.token_ids[span].tolist(), i
        assert np.abs(got["sampler_logprobs"] - insp.sampler_logprobs[span]).max(initial=0) <= 0.5 / QUANTUM
        assert got["shades"].tolist() == insp.shades[span].tolist()
        if insp.scored:
            assert np.abs(got["teacher_logprobs"] - insp.teacher_logprobs[span]).max(initial=0) <= 0.5 / QUANTUM
            assert np.allclose(got["ratio"], insp.ratio[span], rtol=1e-3, atol=0)
        if texts is not None:
            assert [texts[t] for t in got["token_ids"].tolist()] == insp.token_texts(i)
    assert sum(data["rows"]["tokens"]) == sum(insp.span(i).stop - insp.span(i).start for i in rows)
    return data


def test_the_page_holds_every_token_of_its_rows(shards, tmp_path, capsys, monkeypatch):
    insp = inspect_artifact(shards["scored"])
    page = tmp_path / "all.html"
    code, out, err = invoke(capsys, monkeypatch, "inspect", str(shards["scored"]), "--html", str(page))
    assert code == 0 and out.startswith(f"wrote {tmp_path / 'all.html'} ({insp.rows} rows"), (out, err)
    data = check_page_tokens(tmp_path / "all.html", insp, list(range(insp.rows)))
    assert data["meta"]["summary"]["clamp_frac"] == pytest.approx(float(insp.clamped.mean()))
    # A selection, cut into many small blocks (rows then span several): still every token, in its order.
    monkeypatch.setattr(inspect_page, "BLOCK_TOKENS", 7)
    rows = select_rows(insp, worst=5)
    write_page(insp, rows, tmp_path / "worst.html")
    assert len(check_page_tokens(tmp_path / "worst.html", insp, rows)["blocks"]) > 1


def test_the_page_of_unscored_rollouts_and_of_a_hand_artifact(shards, hand, tmp_path):
    for path in (shards["rollouts"], hand):
        insp = inspect_artifact(path)
        write_page(insp, select_rows(insp), tmp_path / "page.html")
        check_page_tokens(tmp_path / "page.html", insp, select_rows(insp))


def test_the_page_is_self_contained_and_script_safe(tmp_path, models):
    art = write_hand(tmp_path / "hand", models["student"])
    insp = inspect_artifact(art)
    insp.prompts[0] = "</script><script>alert(1)</script>"
    text = (tmp_path / "p.html").read_text() if write_page(insp, [0], tmp_path / "p.html") else ""
    assert text.count("</script>") == 2  # the data's and the code's: the prompt cannot close either
    assert read_page_data(tmp_path / "p.html")["prompts"] == [insp.prompts[0]]
    requests = r"""(src|href)\s*=|@import|url\(|fetch\(|XMLHttpRequest|https?://(?!www\.w3\.org/2000/svg)"""
    assert not re.search(requests, text)


# --------------------------------------------------------------------------------------------
# headless Chromium


def open_in_chromium(page: Path, tmp_path: Path) -> tuple[str, str]:
    """(dumped DOM once the page settled, Chromium's log: console messages appear as CONSOLE lines)."""
    cmd = [
        str(CHROMIUM),
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--no-first-run",
        f"--user-data-dir={tmp_path / 'profile'}",
        "--enable-logging=stderr",
        "--v=0",
        "--virtual-time-budget=10000",
        "--dump-dom",
        page.resolve().as_uri(),
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout, done.stderr


def body_attrs(dom: str) -> dict[str, str]:
    return dict(re.findall(r'data-([\w-]+)="([^"]*)"', re.search(r"<body([^>]*)>", dom).group(1)))


@pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium at /usr/bin/chromium")
@pytest.mark.parametrize("which", ["scored", "rollouts"])
def test_the_page_opens_in_chromium_without_console_errors(shards, tmp_path, which):
    insp = inspect_artifact(shards[which])
    write_page(insp, select_rows(insp), tmp_path / "page.html")
    dom, log = open_in_chromium(tmp_path / "page.html", tmp_path)
    assert [line for line in log.splitlines() if "CONSOLE" in line] == []
    attrs = body_attrs(dom)
    assert "error" not in attrs and float(attrs["ready-ms"]) > 0 and attrs["rows"] == str(min(10, insp.rows))
    # The JS decoder agrees with the data: the first card shows row 0's tokens, one span each, in order.
    first = re.search(r'<article class="row" data-j="0">(.*?)</article>', dom, re.S).group(1)
    spans = re.findall(r'<span class="s(\d)" data-t="(\d+)">(.*?)</span>', first, re.S)
    assert [int(t) for _, t, _ in spans] == list(range(insp.span(0).stop))
    shown = [t.replace("\n", "↵\n") or "∅" for t in insp.token_texts(0)]
    assert [html.unescape(text) for _, _, text in spans] == shown
    assert [int(s) - 4 for s, _, _ in spans] == insp.shades[insp.span(0)].tolist()
    assert dom.count("<rect") > 10 and "<path" in dom  # the two plots were drawn


@pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium at /usr/bin/chromium")
def test_the_chromium_check_sees_a_broken_page(shards, tmp_path):
    insp = inspect_artifact(shards["scored"])
    write_page(insp, [0], tmp_path / "page.html")
    text = (tmp_path / "page.html").read_text()
    data = read_page_data(tmp_path / "page.html")
    broken = text.replace(data["blocks"][0]["data"], "AAAA" + data["blocks"][0]["data"][4:])  # not deflate any more
    (tmp_path / "broken.html").write_text(broken)
    dom, log = open_in_chromium(tmp_path / "broken.html", tmp_path)
    assert "error" in body_attrs(dom) and any("CONSOLE" in line for line in log.splitlines())
