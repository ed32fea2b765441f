"""Every stage writes only inside its output directory: never into an input (a model, an artifact),
never anywhere else but the caches.

Each stage runs with every file-system event counted, wherever it lands (inject.py with root "/").
Allowed outside the output directory: rladctl's own cache (weights checksums), the libraries' caches
under ~/.cache and ~/.config (matplotlib's font list, for one), and top-level entries of the system
temporary directory (torch's compile cache directory, probes by libraries).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest
from faultlib import run_faulted
from test_kill import STAGES, stage_args


def allowed_outside(path: str) -> bool:
    home = Path.home()
    p = Path(path)
    if any(p.is_relative_to(root) for root in (home / ".cache", home / ".config")):
        return True
    if os.environ.get("RLADCTL_CACHE") and p.is_relative_to(os.environ["RLADCTL_CACHE"]):
        return True
    return p.parent == Path(tempfile.gettempdir()).resolve()


@pytest.mark.parametrize("stage", STAGES)
def test_a_stage_writes_nothing_outside_its_output_directory(stage, models, shards, tmp_path):
    inputs = [Path(p).resolve() for p in (models["student"], models["teacher"], shards["rollouts"], shards["scored"])]
    done = run_faulted(stage_args(stage, models, shards, tmp_path), tmp_path, root=Path("/"))
    assert done.returncode == 0, done.stderr
    inside = [e for e in done.events if Path(e[2]).is_relative_to(tmp_path.resolve())]
    assert inside, "the stage wrote its outputs somewhere"
    into_inputs = [e for e in done.events if any(Path(e[2]).is_relative_to(i) for i in inputs)]
    assert into_inputs == []
    elsewhere = [e for e in done.events if e not in inside and not allowed_outside(e[2])]
    assert elsewhere == []
