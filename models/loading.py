"""Load any causal LM judge (local path or hub id) the same way in every script."""
from __future__ import annotations

import functools
import importlib.util
from dataclasses import dataclass, field

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from models.gguf import drop_quantization_record, gguf_load_kwargs, require_gguf, split_gguf_path
from utils.hardware import BF16_IF_NATIVE, native_bf16
from utils.io import DataError
from utils.logging import get_logger

log = get_logger(__name__)
DTYPES = {"auto": "auto", "bf16": torch.bfloat16, "bfloat16": torch.bfloat16, "fp16": torch.float16,
          "float16": torch.float16, "fp32": torch.float32, "float32": torch.float32}


@dataclass
class ModelArguments:
    """Which model to load and how; shared by every script."""

    model_name_or_path: str = field(default=None, metadata={"help": "Local directory or hub id."})
    gguf_file: str = field(default=None, metadata={
        "help": "Load a GGUF file (unpacked to dense weights): a path, or a file name inside model_name_or_path. "
                "Needs the gguf package; `python -m models.from_gguf` converts one to a plain checkpoint once."})
    dtype: str = field(default="auto", metadata={
        "help": "auto (as the checkpoint stores it) | bf16 | fp16 | fp32 | bf16_if_native (bf16 on a GPU or a CPU "
                "with AMX / AVX-512 BF16, else fp32; training: fp32 weights, bf16 autocast)"})
    attn_implementation: str = field(
        default="sdpa", metadata={"help": "sdpa | eager | flash_attention_2 (falls back to sdpa when not installed)"}
    )
    trust_remote_code: bool = field(default=False)
    use_peft: bool = field(default=False, metadata={"help": "Train LoRA adapters instead of all weights."})
    lora_r: int = field(default=16)
    lora_alpha: int = field(default=32)
    lora_dropout: float = field(default=0.05)
    lora_target_modules: str = field(default="all-linear", metadata={"help": "'all-linear' or comma-separated names"})

    def __post_init__(self):
        # `--gguf_file path/model.gguf` alone names its folder too: from here on a GGUF model is a
        # (folder or hub id, file name) pair, as `from_pretrained` takes it.
        self.model_name_or_path, self.gguf_file = split_gguf_path(self.model_name_or_path, self.gguf_file)

    @property
    def source(self) -> str | None:
        """What the weights are, in one string for records and fingerprints: the checkpoint, or the GGUF file."""
        if self.gguf_file and self.model_name_or_path:
            return f"{self.model_name_or_path.rstrip('/')}/{self.gguf_file}"
        return self.model_name_or_path


def resolve_attn_implementation(name: str) -> str:
    if name == "flash_attention_2" and (
        importlib.util.find_spec("flash_attn") is None or not torch.cuda.is_available()
    ):
        log.warning("flash_attention_2 requested but flash-attn/CUDA is not available; using sdpa")
        return "sdpa"
    return name


def load_tokenizer(name_or_path: str, trust_remote_code: bool = False, gguf_file: str | None = None):
    """Tokenizer with a pad token (EOS stands in when the model has none, as for Llama 3). Padding
    is never told apart from text by its id: pad = EOS = end of turn in many chat models
    (SmolLM2, Qwen2.5 base), so every stage masks padding by position."""
    kwargs = {"gguf_file": gguf_file} if gguf_file else {}
    if gguf_file:
        require_gguf()
    tok = AutoTokenizer.from_pretrained(name_or_path, trust_remote_code=trust_remote_code, **kwargs)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def tokenizer_of(args: ModelArguments):
    """The tokenizer of the model `args` names (a checkpoint, or a GGUF file)."""
    return load_tokenizer(args.model_name_or_path, args.trust_remote_code, args.gguf_file)


def lora_config(args: ModelArguments, task_type: str = "CAUSAL_LM"):
    from peft import LoraConfig

    targets = args.lora_target_modules
    return LoraConfig(
        r=args.lora_r, lora_alpha=args.lora_alpha, lora_dropout=args.lora_dropout, task_type=task_type,
        target_modules=targets if targets == "all-linear" else [t.strip() for t in targets.split(",")],
    )


def resolve_dtype(name: str):
    """The torch dtype (or "auto") that --dtype `name` means on this machine."""
    if name == BF16_IF_NATIVE:
        return torch.bfloat16 if native_bf16() else torch.float32
    if name not in DTYPES:
        raise DataError(f"--dtype must be one of {', '.join([*DTYPES, BF16_IF_NATIVE])}, got {name!r}")
    return DTYPES[name]


@functools.lru_cache(maxsize=8)
def load_config(name_or_path: str, trust_remote_code: bool = False, gguf_file: str | None = None):
    """A model's config, read once per process (a GGUF file's metadata takes seconds to parse)."""
    from transformers import AutoConfig

    kwargs = {"gguf_file": gguf_file} if gguf_file else {}
    if gguf_file:
        require_gguf()
    return AutoConfig.from_pretrained(name_or_path, trust_remote_code=trust_remote_code, **kwargs)


def checkpoint_dtype(name_or_path: str, trust_remote_code: bool = False, gguf_file: str | None = None):
    """The dtype a checkpoint's weights are stored in (None when its config does not say)."""
    config = load_config(name_or_path, trust_remote_code, gguf_file)
    dtype = getattr(config, "dtype", None) or getattr(config, "torch_dtype", None)
    if isinstance(dtype, str):
        dtype = getattr(torch, dtype, None)
    return dtype if isinstance(dtype, torch.dtype) else None


def model_context_length(args: ModelArguments, tokenizer) -> int | None:
    """The most tokens the model takes at once: its position limit, or the tokenizer's if smaller."""
    config = load_config(args.model_name_or_path, args.trust_remote_code, args.gguf_file)
    limits = [getattr(config, "max_position_embeddings", None), tokenizer.model_max_length]
    limits = [n for n in limits if isinstance(n, int) and 0 < n < 10**7]  # tokenizers say 1e30 when unset
    return min(limits) if limits else None


def load_model(args: ModelArguments, tokenizer, model_class=AutoModelForCausalLM, peft_task_type="CAUSAL_LM",
               dtype=None, **model_kwargs):
    """The model of `args` (wrapped in LoRA adapters with `use_peft`); `dtype` overrides `args.dtype`."""
    if not args.model_name_or_path:
        raise ValueError("model_name_or_path is required")
    if args.dtype == BF16_IF_NATIVE and dtype is None:
        log.info("--dtype %s: %s on this machine", BF16_IF_NATIVE, "bf16" if native_bf16() else "fp32")
    model = model_class.from_pretrained(
        args.model_name_or_path, dtype=dtype if dtype is not None else resolve_dtype(args.dtype),
        trust_remote_code=args.trust_remote_code,
        attn_implementation=resolve_attn_implementation(args.attn_implementation),
        **gguf_load_kwargs(args.gguf_file, load_config(args.model_name_or_path, args.trust_remote_code,
                                                      args.gguf_file) if args.gguf_file else None, model_kwargs),
    )
    if args.gguf_file:
        drop_quantization_record(model)  # dense weights: it trains and saves like any checkpoint
    if model.config.pad_token_id is None:
        model.config.pad_token_id = tokenizer.pad_token_id
    if getattr(model, "generation_config", None) is not None and model.generation_config.pad_token_id is None:
        model.generation_config.pad_token_id = tokenizer.pad_token_id
    if args.use_peft:
        from peft import get_peft_model

        model = get_peft_model(model, lora_config(args, peft_task_type))
        model.print_trainable_parameters()
    return model


def load_model_and_tokenizer(args: ModelArguments, model_class=AutoModelForCausalLM, peft_task_type="CAUSAL_LM",
                             **model_kwargs):
    """Returns (model, tokenizer). With `use_peft`, the model comes wrapped in LoRA adapters."""
    if not args.model_name_or_path:
        raise ValueError("model_name_or_path is required")
    resolve_dtype(args.dtype)  # a bad dtype fails before the tokenizer is read
    tokenizer = tokenizer_of(args)
    return load_model(args, tokenizer, model_class, peft_task_type, **model_kwargs), tokenizer


def save_for_inference(model, tokenizer, output_dir: str) -> None:
    """Save a checkpoint that `from_pretrained` loads as is: LoRA adapters are merged first."""
    if hasattr(model, "merge_and_unload"):
        model = model.merge_and_unload()
    model.save_pretrained(output_dir)
    tokenizer.save_pretrained(output_dir)
