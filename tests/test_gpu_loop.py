"""benchmarks/gpu_loop.py, the `rladctl run` step of benchmarks/gpu_session.sh, runs: its smoke
(tiny shapes on the CPU, the command the session's GPU_SESSION_SMOKE=1 branch runs) prints one row
of phase seconds per iteration and the stages' peaks, so the GPU step is known to work before a
GPU session spends its minutes on it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_the_session_smoke_of_the_loop_step_runs_two_iterations(tmp_path):
    session = (REPO / "benchmarks" / "gpu_session.sh").read_text()
    smoke = session.split('if [ "$SMOKE" = 1 ]; then', 1)[1].split("else", 1)[0]
    assert 'step gpu_loop 300 "$PY" benchmarks/gpu_loop.py --smoke' in smoke
    assert 'step gpu_loop 240 "$PY" benchmarks/gpu_loop.py\n' in session.split("else", 1)[1]
    env = dict(os.environ, RLADCTL_QUIET="1", OMP_NUM_THREADS="1")
    cmd = [sys.executable, str(REPO / "benchmarks" / "gpu_loop.py"), "--smoke", "--workdir", str(tmp_path)]
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=REPO, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("iteration"))
    assert lines[header].split()[1:3] == ["rollout", "tokens"]
    rows = [[float(x) for x in line.split()[1:]] for line in lines[header + 1 : header + 3]]
    assert [line.split()[0] for line in lines[header + 1 : header + 3]] == ["1", "2"]
    for row in rows:  # rollout tokens, scoring, train, loads, saves, other overhead, wall
        assert len(row) == 7 and all(x > 0 for x in row[:3]) and row[6] >= sum(row[:5])
        assert abs(sum(row[:6]) - row[6]) <= 0.004  # printed to the millisecond
    # The second iteration loads no model: the teacher stays, the student is handed on.
    assert rows[1][3] < rows[0][3]
    peaks = lines[lines.index("peak GPU memory per stage (GiB)") + 1 :]  # the CPU has none to read: NaN
    assert [line.split() for line in peaks] == [[str(i), "rollout", "nan", "score-teacher", "nan", "train", "nan"] for i in (1, 2)]  # fmt: skip
