"""GPU check: SFT and M-DPO training tokens/s with model FLOPs utilisation (MFU), and generation
tokens/s for refinement, on a random Llama built from a config (no network needed).

    bash benchmarks/gpu_check.sh            # ~0.5B parameters, bf16 + SDPA, on the first GPU
    python -m benchmarks.gpu_check --size tiny --steps 3   # a CPU smoke run of the same code

MFU counts 6 * N FLOPs per trained token (forward + backward) plus attention, against the peak
dense bf16 throughput of the card (`--peak_tflops`, default from a small table by GPU name).
"""
from __future__ import annotations

import argparse
import time

import torch
from transformers import LlamaConfig, LlamaForCausalLM

from models.logprobs import sequence_logps
from models.losses import m_dpo_loss

SIZES = {  # hidden, layers, heads, kv heads, intermediate
    "0.5b": (1024, 24, 16, 8, 4096),
    "tiny": (128, 4, 4, 2, 352),
}
PEAK_BF16_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0, "L40S": 362.0, "A10": 125.0}


def build(size: str, device, dtype) -> LlamaForCausalLM:
    h, n_layers, heads, kv, inter = SIZES[size]
    config = LlamaConfig(vocab_size=32000, hidden_size=h, num_hidden_layers=n_layers, num_attention_heads=heads,
                         num_key_value_heads=kv, intermediate_size=inter, max_position_embeddings=4096,
                         attn_implementation="sdpa")
    torch.manual_seed(0)
    return LlamaForCausalLM(config).to(device=device, dtype=dtype)


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def train_tokens_per_s(model, batch, seq, steps, device, dpo: bool) -> float:
    opt = torch.optim.AdamW(model.parameters(), lr=1e-5)
    ids = torch.randint(0, model.config.vocab_size, (batch, seq), device=device)
    labels = ids.clone()
    labels[:, : seq // 2] = -100  # prompt half masked, as in the project's data
    ref = torch.zeros(batch // 2, device=device)
    for i in range(steps + 1):
        if i == 1:  # the first step warms up kernels and the allocator
            sync(device)
            t0 = time.perf_counter()
        logits = model(input_ids=ids).logits
        if dpo:  # batch = chosen half + rejected half, as MDPOTrainer concatenates them
            logps, _ = sequence_logps(logits, labels)
            n = batch // 2
            loss = m_dpo_loss(logps[:n], logps[n:], ref, ref, torch.ones(n, device=device), 0.1)[0]
        else:
            loss = torch.nn.functional.cross_entropy(logits[:, :-1].flatten(0, 1).float(), labels[:, 1:].flatten())
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    sync(device)
    return steps * batch * seq / (time.perf_counter() - t0)


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
    p.add_argument("--size", choices=sorted(SIZES), default="0.5b")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--seq", type=int, default=1024)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--gen_batch", type=int, default=256)
    p.add_argument("--gen_tokens", type=int, default=256)
    p.add_argument("--peak_tflops", type=float, default=None)
    a = p.parse_args(argv)
    cuda = torch.cuda.is_available()
    device = torch.device("cuda" if cuda else "cpu")
    dtype = torch.bfloat16 if cuda else torch.float32
    name = torch.cuda.get_device_name(0) if cuda else "CPU"
    peak = a.peak_tflops or next((v for k, v in PEAK_BF16_TFLOPS.items() if k in name), None)
    model = build(a.size, device, dtype)
    n_params = sum(p.numel() for p in model.parameters())
    cfg = model.config
    flops_per_token = 6 * n_params + 12 * cfg.num_hidden_layers * cfg.hidden_size * a.seq  # + attention
    print(f"device: {name}; model: {n_params / 1e6:.0f}M parameters, {dtype}, sdpa; batch {a.batch} x {a.seq} tokens")
    print("| workload | tokens/s | MFU |\n|---|---|---|")
    for label, dpo in (("SFT training", False), ("M-DPO training (policy pass)", True)):
        tps = train_tokens_per_s(model, a.batch, a.seq, a.steps, device, dpo)
        mfu = f"{100 * tps * flops_per_token / (peak * 1e12):.1f}%" if peak else "n/a"
        print(f"| {label} | {tps:,.0f} | {mfu} |")
    model.eval()
    gps = generation_tokens_per_s(model, a.gen_batch, a.seq // 2, a.gen_tokens, device)
    print(f"| refinement generation (batch {a.gen_batch}, {a.gen_tokens} new tokens) | {gps:,.0f} | |")
    if cuda:
        print(f"peak GPU memory: {torch.cuda.max_memory_allocated() / 2**30:.1f} GiB")


if __name__ == "__main__":
    main()
