"""Peak memory and time of the response log-probs at the real shape: the full log-softmax this
project used before, TRL's `selective_log_softmax` on the full logits, and this project's
`forward_logps` (logits only from the first response position, chunked selective log-softmax).

    python -m benchmarks.bench_logprobs [--batch 8 --seq 1536 --response 384 --vocab 128256]

Every variant runs the same random Llama (the given vocabulary, a small hidden size: the
vocabulary is what decides memory) on the same batch, in its own process, so that peak memory
(max RSS on CPU, max allocated on CUDA) belongs to it alone: once without gradients (scoring and
the reference pass) and once with a backward pass (an M-DPO step's log-probs). Each timed run
follows one warm-up run at batch 1.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import resource
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

VARIANTS = {"full": "full log_softmax (before)", "trl": "TRL selective_log_softmax", "ours": "this project"}


def full_log_softmax_logps(model, batch):
    """The implementation this project had: fp32 log-softmax over every position, prompt included."""
    import torch

    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], use_cache=False).logits
    logits, labels = logits[:, :-1], batch["labels"][:, 1:]
    mask = labels != -100
    token = torch.log_softmax(logits.float(), -1).gather(-1, labels.masked_fill(~mask, 0)[..., None])
    return (token[..., 0] * mask).sum(-1)


def trl_logps(model, batch):
    from trl.trainer.utils import selective_log_softmax

    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], use_cache=False).logits
    labels = batch["labels"][:, 1:]
    mask = labels != -100
    return (selective_log_softmax(logits[:, :-1], labels.masked_fill(~mask, 0)) * mask).sum(-1)


def our_logps(model, batch):
    from models.logprobs import forward_logps

    return forward_logps(model, batch)[0]


def make_batch(batch: int, seq: int, response: int, vocab: int, device):
    import torch

    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, vocab, (batch, seq), generator=g)
    labels = ids.clone()
    labels[:, : seq - response] = -100  # the prompt
    return {"input_ids": ids.to(device), "attention_mask": torch.ones_like(ids).to(device), "labels": labels.to(device)}


def peak_mb(device) -> float:
    import torch

    if device.type == "cuda":
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_variant(variant: str, mode: str, a) -> dict:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    cuda = torch.cuda.is_available()
    device = torch.device("cuda" if cuda else "cpu")
    dtype = torch.bfloat16 if cuda else torch.float32
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=a.vocab, hidden_size=a.hidden, intermediate_size=2 * a.hidden,
                         num_hidden_layers=a.layers, num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=max(2048, a.seq), tie_word_embeddings=True)
    model = LlamaForCausalLM(config).to(device=device, dtype=dtype)
    fn = {"full": full_log_softmax_logps, "trl": trl_logps, "ours": our_logps}[variant]
    train = mode == "train"
    model.train(train)

    def step(batch):
        with torch.set_grad_enabled(train):
            logps = fn(model, batch)
            if train:
                logps.sum().backward()
                model.zero_grad(set_to_none=True)
        return logps.detach().float().cpu()

    step(make_batch(1, a.seq, a.response, a.vocab, device))  # warm-up
    batch = make_batch(a.batch, a.seq, a.response, a.vocab, device)
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    before = peak_mb(device) if not cuda else torch.cuda.memory_allocated() / 2**20
    t0 = time.perf_counter()
    logps = step(batch)
    if cuda:
        torch.cuda.synchronize()
    seconds = time.perf_counter() - t0
    return {"variant": variant, "mode": mode, "seconds": seconds, "peak_mb": peak_mb(device),
            "baseline_mb": before, "logps": logps.tolist(), "device": torch.cuda.get_device_name(0) if cuda else "CPU"}


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--seq", type=int, default=1536)
    p.add_argument("--response", type=int, default=384)
    p.add_argument("--vocab", type=int, default=128_256)
    p.add_argument("--hidden", type=int, default=64)
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--modes", default="score,train")
    p.add_argument("--variant", choices=sorted(VARIANTS), help=argparse.SUPPRESS)
    p.add_argument("--mode", help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.variant:
        print("RESULT " + json.dumps(run_variant(a.variant, a.mode, a)))
        return
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    variants = [v for v in VARIANTS if v != "trl" or importlib.util.find_spec("trl") is not None]
    if len(variants) < len(VARIANTS):
        print("trl is not installed: its selective_log_softmax is left out")
    results = []
    for mode in a.modes.split(","):
        for v in variants:
            cmd = [sys.executable, "-m", "benchmarks.bench_logprobs", "--variant", v, "--mode", mode,
                   *[f"--{k}={getattr(a, k)}" for k in ("batch", "seq", "response", "vocab", "hidden", "layers")]]
            proc = subprocess.run(cmd, capture_output=True, text=True, cwd=root)
            line = [l for l in proc.stdout.splitlines() if l.startswith("RESULT ")]
            if proc.returncode != 0 or not line:
                sys.exit(f"{v}/{mode} failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
            results.append(json.loads(line[0][7:]))
    print(f"\nresponse log-probs on {results[0]['device']}: batch {a.batch} x {a.seq} tokens ({a.response} response "
          f"tokens per row), vocabulary {a.vocab:,}, hidden {a.hidden}, {a.layers} layers; one run per cell")
    print("| mode | implementation | seconds | peak MB | peak above baseline MB | peak vs before | max |logp diff| |")
    print("|---|---|---|---|---|---|---|")
    for mode in a.modes.split(","):
        rows = [r for r in results if r["mode"] == mode]
        base = rows[0]
        for r in rows:
            diff = max(abs(x - y) for x, y in zip(r["logps"], base["logps"]))
            print(f"| {mode} | {VARIANTS[r['variant']]} | {r['seconds']:.2f} | {r['peak_mb']:,.0f} | "
                  f"{r['peak_mb'] - r['baseline_mb']:,.0f} | {r['peak_mb'] / base['peak_mb']:.2f}x | {diff:.1e} |")


if __name__ == "__main__":
    main()
