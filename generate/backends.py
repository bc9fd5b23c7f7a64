"""Which sampler a stage samples with: one place builds it, for refinement, evaluation, the judge
CLI and the judge API alike."""
from __future__ import annotations

from generate.sampling import HFSampler, Sampler
from generate.vllm_sampler import VLLMSampler, require_vllm


def build_sampler(name: str, model_args, tokenizer, model=None, vllm_options=None, batch_size: int = 64,
                  top_p: float = 1.0, seed: int = 0, logprobs: bool = False) -> Sampler:
    """The sampler of every sampling stage: `hf` generates with `model`; `vllm` starts an engine on
    the checkpoint `model_args` names, in the precision the HF path would use (see
    generate.vllm_sampler.engine_dtype), reporting sampled log-probs with `logprobs`."""
    if name != "vllm":
        return HFSampler(model, tokenizer, batch_size=batch_size, top_p=top_p)
    require_vllm(model_args)
    return VLLMSampler(model_args.model_name_or_path, tokenizer, vllm_options, top_p=top_p, seed=seed,
                       logprobs=logprobs, hf_dtype=model_args.dtype)
