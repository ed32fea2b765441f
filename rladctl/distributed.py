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
