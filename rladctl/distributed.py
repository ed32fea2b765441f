"""torch.distributed for rladctl's stages, started by torchrun (DESIGN §6).

``torchrun --nproc-per-node N -m rladctl STAGE ...`` sets RANK, WORLD_SIZE and LOCAL_RANK; ``init``
reads them and joins the process group (nccl on GPU, gloo on CPU). A single-process run (no
WORLD_SIZE, or WORLD_SIZE=1) does not initialise torch.distributed (FSDP2 on one GPU excepted: it
gets a group of one): every helper below is then a no-op that returns its input, so stage code
calls them unconditionally. The second half wraps the train stage's model in DDP or FSDP2 and
moves whole state dicts in and out of it.

Non-main ranks are quiet: ``init`` sets RLADCTL_QUIET there, so progress bars and logs (and the
CLI's summary, see ``is_main``) come from rank 0 only. Errors still print on every rank.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import socket
import sys
from collections.abc import Callable
from typing import Any, TypeVar

from rladctl.errors import first_line
from rladctl.store.files import pid_alive

T = TypeVar("T")


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1") or 1)


def rank() -> int:
    return int(os.environ.get("RANK", "0") or 0) if world_size() > 1 else 0


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0") or 0) if world_size() > 1 else 0


def is_main() -> bool:
    return rank() == 0


def enabled() -> bool:
    """True when this process is one of several ranks (and ``init`` has joined their group)."""
    return world_size() > 1


def init(group_of_one: bool = False) -> None:
    """Join the process group torchrun described; idempotent; nothing at all for one process.

    ``group_of_one``: a single process still gets a process group of size 1 (FSDP2 needs a device
    mesh even on one GPU).
    """
    if not enabled() and not group_of_one:
        return
    import torch
    import torch.distributed as dist

    if not is_main():
        os.environ["RLADCTL_QUIET"] = "1"
    if dist.is_initialized():
        return
    cuda = torch.cuda.is_available()
    if cuda:
        torch.cuda.set_device(local_rank())
    # gloo alongside nccl on GPU machines, so CPU tensors (object lists, counts) can be reduced too.
    backend = "cuda:nccl,cpu:gloo" if cuda else "gloo"
    if enabled():
        dist.init_process_group(backend=backend)
    else:
        dist.init_process_group(backend=backend, init_method=f"tcp://127.0.0.1:{_free_port()}", rank=0, world_size=1)
    atexit.register(_shutdown)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _shutdown() -> None:
    import torch.distributed as dist

    if dist.is_initialized():
        dist.destroy_process_group()


def finish() -> None:
    """Leave the process group after a command that succeeded: wait for every rank, then destroy it.

    A rank that tears its group down while a peer is still using it (a slow rank under load) can
    make gloo abort at exit ("terminate called without an active exception"); the barrier makes the
    ranks leave together. The atexit hook stays for every other way out (an error, Ctrl-C), where
    a barrier could wait for a rank that is gone.
    """
    if "torch.distributed" not in sys.modules:  # no command that joined a group ran
        return
    import torch.distributed as dist

    if dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def device(requested: str) -> str:
    """The device this rank uses: ``auto``/``cuda`` become ``cuda:LOCAL_RANK`` under torchrun on GPUs."""
    if not enabled() or requested not in ("auto", "cuda"):
        return requested
    import torch

    return f"cuda:{local_rank()}" if torch.cuda.is_available() else ("cpu" if requested == "auto" else requested)


def barrier() -> None:
    if enabled():
        import torch.distributed as dist

        dist.barrier()


def all_reduce_floats(values: list[float], op: str = "sum") -> list[float]:
    """Reduce a few Python numbers across ranks (float64 on CPU: exact for counts up to 2^53)."""
    if not enabled():
        return list(values)
    import torch
    import torch.distributed as dist

    ops = {"sum": dist.ReduceOp.SUM, "max": dist.ReduceOp.MAX, "min": dist.ReduceOp.MIN}
    tensor = torch.tensor(values, dtype=torch.float64)
    dist.all_reduce(tensor, op=ops[op])
    return tensor.tolist()


def all_reduce_float(value: float, op: str = "sum") -> float:
    return all_reduce_floats([value], op)[0]


def all_gather_objects(obj: T) -> list[T]:
    """Every rank's ``obj`` (picklable), in rank order; ``[obj]`` for one process."""
    if not enabled():
        return [obj]
    import torch.distributed as dist

    out: list[Any] = [None] * world_size()
    dist.all_gather_object(out, obj)
    return out


def my_share(items: list[T]) -> list[T]:
    """This rank's items: item i belongs to rank i % world_size (resume-stable, balanced)."""
    return items[rank() :: world_size()] if enabled() else list(items)


def owns(index: int) -> bool:
    return index % world_size() == rank() if enabled() else True


def main_only(fn: Callable[[], T]) -> T | None:
    """Run ``fn`` on rank 0 while the others wait; a user error it raises is raised on every rank.

    For the file system work only one rank may do (a manifest, a checkpoint, clearing a directory).
    """
    if not enabled():
        return fn()
    from rladctl.errors import RladError

    result, error = None, None
    if is_main():
        try:
            result = fn()
        except RladError as exc:
            error = exc
    error = all_gather_objects(error)[0]  # also the barrier: nobody goes on before rank 0 is done
    if error is not None:
        raise error
    return result


# --------------------------------------------------------------------------------------------
# training: DDP or FSDP2 around one module


def wrap(module, parallel: str, device, shard_units=()):
    """``module`` under DDP (default) or FSDP2 (``parallel = "fsdp"``); itself for one process.

    FSDP2 shards each of ``shard_units`` (the decoder layers) and then the root, which keeps what
    is left (embeddings, final norm, a tied head). Its forward all-gathers a unit's parameters, its
    backward reduce-scatters their gradients, averaged over ranks as DDP's all-reduce is.
    """
    import torch

    device = torch.device(device)
    if parallel == "fsdp":
        from torch.distributed.device_mesh import init_device_mesh
        from torch.distributed.fsdp import fully_shard

        mesh = init_device_mesh(device.type, (world_size(),))
        for unit in shard_units:
            fully_shard(unit, mesh=mesh)
        fully_shard(module, mesh=mesh)
        return module
    if not enabled():
        return module
    import inspect

    from torch.nn.parallel import DistributedDataParallel

    # The buffers (rotary tables) never change: syncing them would make every forward a collective.
    no_sync = (
        "forward_sync_buffers"
        if "forward_sync_buffers" in inspect.signature(DistributedDataParallel).parameters
        else "broadcast_buffers"
    )
    return DistributedDataParallel(
        module, device_ids=[device.index] if device.type == "cuda" else None, **{no_sync: False}
    )


def is_fsdp(module) -> bool:
    if not _group_exists():
        return False
    from torch.distributed.fsdp import FSDPModule

    return isinstance(module, FSDPModule)


def reshard(module) -> None:
    """FSDP2 keeps the root's parameters gathered after a forward (its backward would need them):
    free them after a forward that has no backward, before anything loads into the shards."""
    if is_fsdp(module):
        module.reshard()


def _group_exists() -> bool:
    """Whether ``init`` made a process group (only then can a module be FSDP2's or hold DTensors)."""
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized()


def grad_sync(module, sync: bool):
    """DDP: no all-reduce on the micro-batches before the last (their gradients add up locally)."""
    if sync or not enabled():
        return contextlib.nullcontext()
    from torch.nn.parallel import DistributedDataParallel

    return module.no_sync() if isinstance(module, DistributedDataParallel) else contextlib.nullcontext()


def clip_grad_norm(parameters, max_norm: float) -> float:
    """The global gradient norm (FSDP2's sharded gradients included), then clip to ``max_norm`` (0 = off)."""
    import torch

    params = [p for p in parameters if p.grad is not None]
    norm = _full(torch.nn.utils.get_total_norm([p.grad for p in params]))
    if max_norm > 0:
        torch.nn.utils.clip_grads_with_norm_(params, max_norm, norm)
    return float(norm)


def all_finite(parameters) -> bool:
    import torch

    local = all(bool(torch.isfinite(_local(p)).all()) for p in parameters)
    return all_reduce_float(0.0 if local else 1.0, "max") == 0.0


def _full(tensor):
    """A DTensor (FSDP2: a sharded or partial value) made whole; any other tensor as it is."""
    if not _group_exists():
        return tensor
    from torch.distributed.tensor import DTensor

    return tensor.full_tensor() if isinstance(tensor, DTensor) else tensor


def _local(tensor):
    if not _group_exists():
        return tensor
    from torch.distributed.tensor import DTensor

    return tensor.to_local() if isinstance(tensor, DTensor) else tensor


def full_state(module, optimizer, prefix: str) -> tuple[dict, dict | None]:
    """An FSDP2 module's whole model and optimizer state (None without an optimizer), gathered on rank 0 ({} elsewhere).

    Call it on every rank. Model keys lose ``prefix``; the optimizer state comes in torch's plain
    form (parameter index keys), as a single process's ``optimizer.state_dict()`` would give it, so
    any number of ranks, with DDP or FSDP2, can resume from it.
    """
    from torch.distributed.checkpoint.state_dict import (
        StateDictOptions,
        get_model_state_dict,
        get_optimizer_state_dict,
    )

    options = StateDictOptions(full_state_dict=True, cpu_offload=True)
    model_state = get_model_state_dict(module, options=options)
    optim_state = get_optimizer_state_dict(module, optimizer, options=options) if optimizer is not None else None
    if not is_main():
        return {}, {}
    model_state = {k.removeprefix(prefix): v for k, v in model_state.items()}
    if optim_state is None:
        return model_state, None
    index = {name: i for i, (name, _) in enumerate(module.named_parameters())}
    optim_state = {
        "state": {index[name]: value for name, value in optim_state["state"].items()},
        "param_groups": [dict(g, params=[index[name] for name in g["params"]]) for g in optim_state["param_groups"]],
    }
    return model_state, optim_state


def load_optimizer_state(module, optimizer, state: dict) -> None:
    """Load a plain ``optimizer.state_dict()`` (saved by any number of ranks) on every rank."""
    if not is_fsdp(module):
        optimizer.load_state_dict(state)
        return
    from torch.distributed.checkpoint.state_dict import (
        StateDictOptions,
        set_optimizer_state_dict,
    )

    names = [name for name, _ in module.named_parameters()]
    by_name = {
        "state": {names[int(i)]: value for i, value in state["state"].items()},
        "param_groups": [dict(g, params=[names[int(i)] for i in g["params"]]) for g in state["param_groups"]],
    }
    set_optimizer_state_dict(module, optimizer, by_name, options=StateDictOptions(full_state_dict=True))


def load_model_state(module, state: dict, prefix: str) -> None:
    """Load a whole (unsharded) state dict into an FSDP2 module: each rank keeps its shards."""
    from torch.distributed.checkpoint.state_dict import (
        StateDictOptions,
        set_model_state_dict,
    )

    set_model_state_dict(
        module, {prefix + k: v for k, v in state.items()}, options=StateDictOptions(full_state_dict=True, strict=False)
    )


def sharded_optimizer_state(module, optimizer) -> dict:
    """This rank's shard of an FSDP2 module's optimizer state (DTensors, keyed by parameter name), to
    load back with ``load_sharded_optimizer_state`` into the same module shape on the same ranks."""
    from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict

    return get_optimizer_state_dict(module, optimizer)


def load_sharded_optimizer_state(module, optimizer, state: dict) -> None:
    from torch.distributed.checkpoint.state_dict import set_optimizer_state_dict

    set_optimizer_state_dict(module, optimizer, state)


def unsharded_copy(hf_model):
    """A plain float32 copy of an FSDP2-sharded Hugging Face model on this rank's CPU, for sampling
    and for the next train to shard again. Call it on every rank: each parameter is all-gathered
    once (one collective per parameter, never per forward) and moved to the CPU; buffers (rotary
    tables) are copied in their own dtype. Needs the whole model's float32 weights in host memory,
    as FSDP2's load does."""
    import copy

    import torch
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):  # no init: every tensor is replaced below
        plain = AutoModelForCausalLM.from_config(copy.deepcopy(hf_model.config))
    plain.to_empty(device="cpu")
    plain.tie_weights()  # to_empty gave a tied head a tensor of its own
    with torch.no_grad():
        for name, param in hf_model.named_parameters():  # a tied head: once, under its first name
            plain.get_parameter(name).data = _full(param.detach()).to("cpu", copy=True)
        for name, buffer in hf_model.named_buffers():
            owner, _, leaf = name.rpartition(".")
            plain.get_submodule(owner)._buffers[leaf] = buffer.detach().to("cpu", copy=True)
    plain.generation_config = copy.deepcopy(hf_model.generation_config)
    return plain.eval()


# --------------------------------------------------------------------------------------------
# a rank that dies: one line on rank 0 naming it and its stage


class RankLost(BaseException):
    """SIGTERM from torchrun, which stops the ranks left once one has died (see ``watch_ranks``).
    A BaseException, so that no ``except Exception`` on the way swallows it."""


_watch: dict[str, Any] = {}  # the status directory, this rank's stage, and the peers' (host, pid)

STATUS_DIR = ".rladctl-ranks"  # under the run directory (shared by every node, DESIGN §6)


def watch_ranks(run_dir):
    """Within this block (``rladctl run`` under torchrun), a rank that dies ends the run with one
    error line on rank 0 that names the rank and its stage, instead of a traceback or a silent stop.

    Every rank records its stage (``at_stage``) in ``RUN_DIR/.rladctl-ranks/rank-R``, with the
    error that stops it if it raises one (a CUDA out-of-memory, say). When a rank is killed
    (SIGKILL, the kernel's OOM killer), rank 0 learns it either from a collective that fails or from
    torchrun, which sends SIGTERM to the ranks left; either way it finds the ranks that are gone (a
    process on this node that no longer runs, or one that recorded an error) and raises a
    ``RladError`` naming the first one. The other ranks leave quietly. Nothing for one process.
    """
    if not enabled():
        return contextlib.nullcontext()
    return _watching(run_dir)


@contextlib.contextmanager
def _watching(run_dir):
    import signal
    from pathlib import Path

    init()
    status = Path(run_dir) / STATUS_DIR
    main_only(lambda: status.mkdir(parents=True, exist_ok=True))
    peers = dict(enumerate(all_gather_objects((socket.gethostname(), os.getpid()))))
    _watch.update(dir=status, peers=peers, stage="start-up")
    at_stage("start-up")

    def on_term(signum, frame):  # torchrun stops the ranks left after one failed
        raise RankLost("SIGTERM")

    previous = signal.signal(signal.SIGTERM, on_term)
    try:
        yield
    except BaseException as exc:
        # A collective fails on the ranks left when a peer dies (gloo: "Connection closed by peer").
        collective = isinstance(exc, RuntimeError) and bool(lost_ranks(status, rank(), peers))
        if not isinstance(exc, RankLost) and not collective:
            _record(_watch["stage"], error=f"{type(exc).__name__}: {first_line(exc)[:200]}")
            raise  # this rank's own error (a user error raised on every rank, too): it prints it
        if not is_main():
            raise SystemExit(1) from None  # rank 0 says what happened
        raise rank_lost_error(lost_ranks(status, rank(), peers), _watch["stage"], run_dir) from None
    else:
        barrier()
        main_only(lambda: _remove_tree(status))
    finally:
        signal.signal(signal.SIGTERM, previous)
        _watch.clear()


def at_stage(stage: str) -> None:
    """Record that this rank now runs ``stage`` (a no-op outside ``watch_ranks``)."""
    if _watch:
        _watch["stage"] = stage
        _record(stage)


def _record(stage: str, error: str | None = None) -> None:
    import json

    path = _watch["dir"] / f"rank-{rank()}"
    entry = {"rank": rank(), "host": socket.gethostname(), "pid": os.getpid(), "stage": stage, "error": error}
    tmp = path.with_name(f".{path.name}.tmp")
    with contextlib.suppress(OSError):
        tmp.write_text(json.dumps(entry))
        os.replace(tmp, path)


def lost_ranks(status_dir, me: int, peers: dict[int, tuple[str, int]]) -> list[dict]:
    """The ranks other than ``me`` that are gone: each one's last record (rank, stage, error).

    A rank is gone when it recorded an error, or when its process, on this node, no longer runs
    (or is a zombie its launcher has not reaped). A rank on another node that was killed without a
    word cannot be told from a live one here.
    """
    import json
    from pathlib import Path

    here, lost = socket.gethostname(), []
    for r, (host, pid) in sorted(peers.items()):
        if r == me:
            continue
        try:
            entry = json.loads((Path(status_dir) / f"rank-{r}").read_text())
        except (OSError, ValueError):
            entry = {"rank": r, "stage": "start-up", "error": None}
        if entry.get("error") or (host == here and not pid_alive(pid)):
            lost.append(entry)
    return lost


def rank_lost_error(lost: list[dict], my_stage: str, run_dir):
    from rladctl.errors import RladError

    fix = "Re-run the same command (any number of ranks) to resume; finished parts and iterations are kept"
    if not lost:
        what = f"another rank (on another node) stopped while rank 0 ran {my_stage}; torchrun's report names it"
        return RladError(what, f"in {run_dir}", fix)
    first = lost[0]
    cause = first.get("error") or "killed: out of memory (the kernel's OOM killer) or SIGKILL"
    what = f"rank {first['rank']} of {world_size()} died during {first['stage']} ({cause})"
    return RladError(what, f"in {run_dir}", fix)


def _remove_tree(path) -> None:
    import shutil

    shutil.rmtree(path, ignore_errors=True)
