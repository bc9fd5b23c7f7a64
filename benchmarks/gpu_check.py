"""GPU check at the real shape: M-DPO, the reference pass and SFT on a random ~1.2B-parameter Llama
with Llama 3's 128,256-token vocabulary, before (fp32 log-softmax over every position) and after
(this project's log-probs), with tokens/s, model FLOPs utilisation (MFU) and peak memory; then the
project's `MDPOTrainer` end to end (reference pass, gradient accumulation) and HF generation.

    bash benchmarks/gpu_check.sh                 # the whole check on the first GPU
    python -m benchmarks.gpu_check --size tiny --batch 4 --seq 256 --response 64 --steps 2   # CPU smoke run

MFU counts the FLOPs the task needs, whatever an implementation executes: 6 x (parameters outside
the vocabulary matrix) per token, 6 x hidden x vocab per *response* token (only those need
logits), and causal attention (6 x layers x hidden x sequence length per token, half of PaLM's
full-matrix count); a forward pass (reference pass) is a third of that. The peak is the card's
dense bf16 throughput (`--peak_tflops`, default from a table by GPU name).
"""
from __future__ import annotations

import argparse
import time

import torch
from transformers import LlamaConfig, LlamaForCausalLM

from benchmarks.bench_logprobs import full_log_softmax_logps, make_batch, our_logps
from models.losses import m_dpo_loss

SIZES = {  # hidden, layers, heads, kv heads, intermediate, vocab
    "1b": (2048, 16, 32, 8, 8192, 128_256),  # Llama-3.2-1B's shape
    "0.5b": (1024, 24, 16, 8, 4096, 32_000),
    "tiny": (128, 2, 4, 2, 352, 128_256),
}
PEAK_BF16_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0, "L40S": 362.0, "A10": 125.0}


def build(size: str, device, dtype) -> LlamaForCausalLM:
    h, n_layers, heads, kv, inter, vocab = SIZES[size]
    config = LlamaConfig(vocab_size=vocab, hidden_size=h, num_hidden_layers=n_layers, num_attention_heads=heads,
                         num_key_value_heads=kv, intermediate_size=inter, max_position_embeddings=4096,
                         tie_word_embeddings=True, attn_implementation="sdpa")
    torch.manual_seed(0)
    with torch.device(device):
        return LlamaForCausalLM(config).to(dtype=dtype)


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def task_flops(model, batch: int, seq: int, response: int, train: bool) -> float:
    cfg = model.config
    n_body = sum(p.numel() for p in model.parameters()) - cfg.vocab_size * cfg.hidden_size
    tokens = batch * seq
    forward = (2 * n_body * tokens + 2 * cfg.hidden_size * cfg.vocab_size * batch * response
               + 2 * cfg.num_hidden_layers * cfg.hidden_size * seq * tokens)
    return 3 * forward if train else forward


def mdpo_loss(model, batch, logps_fn):
    logps = logps_fn(model, batch)
    n = logps.shape[0] // 2  # chosen half + rejected half, as MDPOTrainer concatenates them
    ref = logps.detach()  # the policy is the reference at the start; the loss still has a gradient
    return m_dpo_loss(logps[:n], logps[n:], ref[:n], ref[n:], torch.ones(n, device=logps.device), 0.1)[0]


def sft_loss(model, batch, logps_fn):
    logps = logps_fn(model, batch)
    return -logps.sum() / (batch["labels"][:, 1:] != -100).sum()


def measure(fn, steps: int, device) -> tuple[float, float]:
    """(seconds per call after one warm-up call, peak GiB)."""
    fn()
    sync(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    for _ in range(steps):
        fn()
    sync(device)
    peak = torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else float("nan")
    return (time.perf_counter() - t0) / steps, peak


def train_step_fn(model, opt, batch, loss_fn, logps_fn):
    def step():
        loss_fn(model, batch, logps_fn).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    return step


def forward_fn(model, batch, logps_fn):
    @torch.no_grad()
    def step():
        logps_fn(model, batch)
    return step


def apply_liger(model) -> str | None:
    """Liger's fused RMSNorm, SwiGLU and RoPE kernels (Triton) on this model instance; None if they ran."""
    try:
        from liger_kernel.transformers import apply_liger_kernel_to_llama

        apply_liger_kernel_to_llama(rope=True, rms_norm=True, swiglu=True, cross_entropy=False,
                                    fused_linear_cross_entropy=False, model=model)
        return None
    except Exception as e:  # not installed, or not compatible with this transformers
        return f"{type(e).__name__}: {str(e).splitlines()[0][:120]}"


def trainer_end_to_end(model, a, device, peak, liger: bool) -> list[str]:
    """The project's MDPOTrainer on the same model: reference pass, then training with GA 2."""
    import tempfile

    from transformers import TrainerCallback
    from transformers.trainer_callback import PrinterCallback

    from models.m_dpo_trainer import MDPOConfig, MDPOTrainer, PairCollator

    g = torch.Generator().manual_seed(1)
    prompt_len = a.seq - a.response
    pairs = []
    for _ in range(a.pairs_per_step * (a.trainer_steps + 2)):
        prompt = torch.randint(0, model.config.vocab_size, (prompt_len,), generator=g).tolist()
        c, r = (torch.randint(0, model.config.vocab_size, (a.response,), generator=g).tolist() for _ in range(2))
        pairs.append({"chosen_input_ids": prompt + c, "chosen_labels": [-100] * prompt_len + c,
                      "rejected_input_ids": prompt + r, "rejected_labels": [-100] * prompt_len + r, "weight": 1.0})
    step_times = []

    class Timer(TrainerCallback):
        def on_step_begin(self, args, state, control, **kw):
            sync(device)
            self.t0 = time.perf_counter()

        def on_step_end(self, args, state, control, **kw):
            sync(device)
            step_times.append(time.perf_counter() - self.t0)

    args = MDPOConfig(output_dir=tempfile.mkdtemp(), per_device_train_batch_size=a.pairs_per_step // 2,
                      gradient_accumulation_steps=2, max_steps=a.trainer_steps + 2, learning_rate=1e-6,
                      optim="adamw_torch_fused" if device.type == "cuda" else "adamw_torch", bf16=device.type == "cuda",
                      logging_steps=1, report_to="none", save_strategy="no", disable_tqdm=True,
                      loss_type=["sigmoid", "sft"], precompute_ref_batch_size=a.pairs_per_step,
                      precompute_ref_max_tokens=2 * a.pairs_per_step * a.seq,
                      use_cpu=device.type != "cuda", dataloader_num_workers=2 if device.type == "cuda" else 0)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    sync(device)
    t0 = time.perf_counter()
    trainer = MDPOTrainer(model=model, args=args, train_dataset=pairs, data_collator=PairCollator(0),
                          callbacks=[Timer()])
    trainer.remove_callback(PrinterCallback)
    sync(device)
    ref_seconds = time.perf_counter() - t0
    trainer.train()
    first = next(h for h in trainer.state.log_history if "rewards/margins" in h)
    per_step = sum(step_times[2:]) / len(step_times[2:])  # the first two steps warm up
    tokens = 2 * a.pairs_per_step * a.seq
    ref_tokens = 2 * len(pairs) * a.seq
    train_mfu = task_flops(model, 2 * a.pairs_per_step, a.seq, a.response, True) / per_step
    ref_mfu = task_flops(model, 2 * len(pairs), a.seq, a.response, False) / ref_seconds
    gib = torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else float("nan")
    label = f"MDPOTrainer, GA 2 x {a.pairs_per_step // 2} pairs, NLL term on{', Liger' if liger else ''}"
    return [f"| {label} | {tokens / per_step:,.0f} | "
            f"{fmt_mfu(train_mfu, peak)} | {gib:.1f} |",
            f"| MDPOTrainer reference pass ({len(pairs)} pairs, incl. trainer setup) | "
            f"{ref_tokens / ref_seconds:,.0f} | "
            f"{fmt_mfu(ref_mfu, peak)} | |",
            f"first-step reward margin {first['rewards/margins']:+.5f} (policy = reference: must be ~0)"]


def fmt_mfu(flops_per_s: float, peak: float | None) -> str:
    return f"{100 * flops_per_s / (peak * 1e12):.1f}%" if peak else "n/a"


@torch.no_grad()
def generation_tokens_per_s(model, batch, prompt_len, new_tokens, device) -> float:
    ids = torch.randint(0, model.config.vocab_size, (batch, prompt_len), device=device)
    kwargs = dict(max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=True, temperature=1.0,
                  pad_token_id=0, eos_token_id=None)
    model.generate(ids, **{**kwargs, "max_new_tokens": 4, "min_new_tokens": 4})
    sync(device)
    t0 = time.perf_counter()
    model.generate(ids, **kwargs)
    sync(device)
    return batch * new_tokens / (time.perf_counter() - t0)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--size", choices=sorted(SIZES), default="1b")
    p.add_argument("--batch", type=int, default=16, help="sequences per step (chosen + rejected rows)")
    p.add_argument("--seq", type=int, default=1536)
    p.add_argument("--response", type=int, default=384, help="response tokens at the end of every row")
    p.add_argument("--steps", type=int, default=8)
    p.add_argument("--pairs_per_step", type=int, default=8, help="MDPOTrainer: pairs per optimizer step")
    p.add_argument("--trainer_steps", type=int, default=6)
    p.add_argument("--gen_batch", type=int, default=256)
    p.add_argument("--gen_tokens", type=int, default=256)
    p.add_argument("--skip", default="", help="comma-separated: before,liger,trainer,generation")
    p.add_argument("--peak_tflops", type=float, default=None)
    a = p.parse_args(argv)
    skip = set(a.skip.split(","))
    cuda = torch.cuda.is_available()
    device = torch.device("cuda" if cuda else "cpu")
    dtype = torch.bfloat16 if cuda else torch.float32
    name = torch.cuda.get_device_name(0) if cuda else "CPU"
    peak = a.peak_tflops or next((v for k, v in PEAK_BF16_TFLOPS.items() if k in name), None)
    model = build(a.size, device, dtype)
    n_params = sum(p.numel() for p in model.parameters())
    batch = make_batch(a.batch, a.seq, a.response, model.config.vocab_size, device)
    tokens = a.batch * a.seq
    print(f"device: {name}; model: {n_params / 1e9:.2f}B parameters (vocabulary {model.config.vocab_size:,}), {dtype}, "
          f"sdpa; batch {a.batch} x {a.seq} tokens, {a.response} response tokens per row; torch {torch.__version__}")
    print("| workload | tokens/s | MFU | peak GiB |\n|---|---|---|---|")
    opt = torch.optim.AdamW(model.parameters(), lr=1e-6, fused=cuda)
    rows = [("M-DPO step", True, mdpo_loss), ("SFT step", True, sft_loss), ("reference pass", False, None)]
    implementations = [("before: full fp32 log-softmax", full_log_softmax_logps), ("this project", our_logps)]
    if "before" in skip:
        implementations = implementations[1:]
    for label, train, loss_fn in rows:
        for impl, logps_fn in implementations:
            if label == "SFT step" and impl.startswith("before"):
                continue
            fn = train_step_fn(model, opt, batch, loss_fn, logps_fn) if train else forward_fn(model, batch, logps_fn)
            model.train(train)
            try:
                seconds, gib = measure(fn, a.steps, device)
            except torch.OutOfMemoryError:
                opt.zero_grad(set_to_none=True)
                print(f"| {label}, {impl} | out of memory | | |", flush=True)
                continue
            mfu = task_flops(model, a.batch, a.seq, a.response, train) / seconds
            print(f"| {label}, {impl} | {tokens / seconds:,.0f} | {fmt_mfu(mfu, peak)} | {gib:.1f} |", flush=True)
    liger = "liger" not in skip
    if liger:
        failed = apply_liger(model)
        liger = not failed
        if failed:
            print(f"| M-DPO step + Liger kernels | not run: {failed} | | |")
        else:
            model.train()
            seconds, gib = measure(train_step_fn(model, opt, batch, mdpo_loss, our_logps), a.steps, device)
            mfu = task_flops(model, a.batch, a.seq, a.response, True) / seconds
            print(f"| M-DPO step, this project + Liger RMSNorm/SwiGLU/RoPE | {tokens / seconds:,.0f} | "
                  f"{fmt_mfu(mfu, peak)} | {gib:.1f} |", flush=True)
    del opt
    if cuda:
        torch.cuda.empty_cache()
    if "trainer" not in skip:
        for line in trainer_end_to_end(model, a, device, peak, liger):
            print(line, flush=True)
    if "generation" not in skip:
        model.eval()
        gps = generation_tokens_per_s(model, a.gen_batch, a.seq - a.response, a.gen_tokens, device)
        print(f"| HF generate (batch {a.gen_batch}, {a.gen_tokens} new tokens) | {gps:,.0f} | | |")


if __name__ == "__main__":
    main()
