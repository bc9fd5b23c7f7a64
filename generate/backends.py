"""Which sampler a stage samples with: one place builds it, for refinement, evaluation, the judge
CLI and the judge API alike."""
from __future__ import annotations

from data.schemas import load_prefs
from generate.sampling import HFSampler, Sampler
from generate.vllm_sampler import VLLMSampler, require_vllm
from models.loading import tokenizer_of
from utils.config import check_default_inputs, require


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


def labelled_pairs_to_sample(model_args, args, validate) -> tuple[list[float], list[dict], object]:
    """What a script sampling judgments of labelled pairs (refinement, bootstrap) does first, in one
    order: refuse a missing setting or default input, check every setting with `validate`, then read
    the pairs (the first --max_items) and the tokenizer; no model yet, so a bad setting never costs a
    load. Returns the temperatures, the pairs and the tokenizer."""
    require(model_name_or_path=model_args.model_name_or_path, pref_file=args.pref_file, output_dir=args.output_dir)
    check_default_inputs(model_args.model_name_or_path, args.pref_file)
    temperatures = validate(args, model_args)
    return temperatures, load_prefs(args.pref_file)[: args.max_items], tokenizer_of(model_args)
