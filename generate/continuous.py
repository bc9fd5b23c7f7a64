"""Continuous batching: a fixed number of rows ("slots") decode together, and when a judgment ends
the next waiting request takes its slot, so every step runs a full batch until the queue is empty.

On a CPU the matrix products of a decode step run near the processor's peak once the batch has
~128 rows and fall to a fifth of it at 16 (docs/benchmarks.md), so a batch that shrinks as its
judgments end wastes most of its last steps. The KV cache is allocated once (`SlotCache`): every
slot writes its next token at the same column `t`, a new request's prompt is placed so that it ends
at `t`, and columns before a slot's own start are masked; a step reads only from the first column a
busy slot sees. Every `max_new_tokens` steps the live columns move back to the left (one copy), so
the cache never holds more than the longest prompt plus two judgments. A prompt asked at several
temperatures is prefilled once.

The random numbers of a row come from its own seed (`Request.seed`, then the sample's index), not
from a stream shared by the batch: a row samples the same judgment whatever else is in the batch,
whenever it is admitted. Greedy rows are the argmax, as in `generate.decoding.sample_batch`, which
stays the path for models this one does not cover (`supported`).
"""
from __future__ import annotations

import sys
from collections import Counter, deque
from contextlib import contextmanager
from typing import NamedTuple

import torch
from transformers import AttentionInterface, DynamicCache

from generate.decoding import Sampled, cache_argument, top_p_filter
from utils.seed import derive_seed

ATTENTION = "gfriend_slots"  # the decode steps' attention, registered with transformers below


class Request(NamedTuple):
    prompt: list[int]  # token ids
    num_samples: int  # rows that share the prompt's prefill
    temperature: float  # 0: greedy
    seed: int  # sample j draws from derive_seed(seed, j)


def supported(model) -> bool:
    """Whether the slot cache can serve the model: its attention layers take their function from
    transformers' registry (so the decode steps can use `slot_attention`), with no sliding window
    and no logit soft-capping (the decode steps compute the full causal attention)."""
    config = model.config
    window = getattr(config, "sliding_window", None)
    uses_window = window is not None and getattr(config, "use_sliding_window", True)
    softcap = getattr(config, "attn_logit_softcapping", None)
    registry = "ALL_ATTENTION_FUNCTIONS" in vars(sys.modules[type(model).__module__])
    return registry and not uses_window and not softcap


def slot_attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
    """One decode step's attention over the slot cache. The query heads of a key-value group read
    that group's keys and values in place (transformers' SDPA path copies them once per query head
    whenever there is a mask: 3x SmolLM2's cache, 4x Llama 3's, every layer and every step).
    `attention_mask` is the boolean [slots, 1, 1, columns] of `decode_mask`."""
    slots, heads, q_len, dim = query.shape
    groups = key.shape[1]
    q = query.reshape(slots, groups, heads // groups * q_len, dim)
    scores = torch.matmul(q, key.transpose(-1, -2)).float() * (scaling if scaling is not None else dim ** -0.5)
    scores = scores.masked_fill(~attention_mask, float("-inf"))
    out = torch.matmul(scores.softmax(-1).to(value.dtype), value)
    return out.reshape(slots, heads, q_len, dim).transpose(1, 2).contiguous(), None


AttentionInterface.register(ATTENTION, slot_attention)


@contextmanager
def attention(model, name: str):
    """The model's layers use attention function `name` within the block."""
    before = model.config._attn_implementation
    model.config._attn_implementation = name
    try:
        yield
    finally:
        model.config._attn_implementation = before


class SlotCache:
    """The KV cache of `slots` rows and `capacity` columns, written at one shared column `t`. It
    answers the attention layers' `update` as transformers' caches do."""

    def __init__(self, model, slots: int, capacity: int, t: int):
        config = model.config
        heads = getattr(config, "num_key_value_heads", None) or config.num_attention_heads
        head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
        param = next(model.parameters())
        shape = (slots, heads, capacity, head_dim)
        self.keys = [torch.zeros(shape, dtype=param.dtype, device=param.device)
                     for _ in range(config.num_hidden_layers)]
        self.values = [torch.zeros_like(k) for k in self.keys]
        self.capacity, self.t = capacity, t
        self.first = 0  # the first column any busy slot sees: the steps read from there to t

    def update(self, key_states, value_states, layer_idx, *args, **kwargs):
        t = self.t
        self.keys[layer_idx][:, :, t] = key_states[:, :, 0]
        self.values[layer_idx][:, :, t] = value_states[:, :, 0]
        return self.keys[layer_idx][:, :, self.first : t + 1], self.values[layer_idx][:, :, self.first : t + 1]

    def place(self, slot: int, layer_keys: list, layer_values: list) -> None:
        """A prefilled prompt's keys and values (per layer [heads, p, head_dim]) into `slot`, ending
        just before column t."""
        p = layer_keys[0].shape[1]
        for k, v, new_k, new_v in zip(self.keys, self.values, layer_keys, layer_values):
            k[slot, :, self.t - p : self.t] = new_k
            v[slot, :, self.t - p : self.t] = new_v

    def shift(self, by: int) -> None:
        """Move the live columns `by` to the left (the ones before were every slot's past)."""
        for buffers in (self.keys, self.values):
            for b in buffers:
                b[:, :, : self.t - by] = b[:, :, by : self.t].clone()
        self.t -= by

    def keep(self, slots: torch.Tensor) -> None:
        """Only these slots, in this order (the others are empty)."""
        self.keys = [k.index_select(0, slots) for k in self.keys]
        self.values = [v.index_select(0, slots) for v in self.values]


def draw_with(probs: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """One token per row by inverse transform, with each row's own uniform number `u`."""
    cdf = probs.cumsum(-1)
    return torch.searchsorted(cdf, (u[:, None] * cdf[:, -1:]).to(cdf.dtype), right=True).clamp(
        max=probs.shape[-1] - 1).squeeze(1)


def decode_mask(start: torch.Tensor, first: int, t: int) -> torch.Tensor:
    """The mask of one decode step over columns first .. t: slot s sees columns start[s] .. t (an
    empty slot sees at least its own column t)."""
    return (torch.arange(first, t + 1, device=start.device)[None, :] >= start[:, None])[:, None, None, :]


@torch.no_grad()
def prefill(model, prompts: list[list[int]], pad_id: int) -> tuple[torch.Tensor, list[list], list[list]]:
    """One forward over left-padded prompts: the next-token logits of each, and each prompt's
    keys and values per layer ([heads, its length, head_dim], padding cut off)."""
    device = next(model.parameters()).device
    width = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(prompts), width), dtype=torch.long)
    for row, p in enumerate(prompts):
        ids[row, width - len(p):] = torch.tensor(p)
        mask[row, width - len(p):] = 1
    ids, mask = ids.to(device), mask.to(device)
    cache = DynamicCache(config=model.config)
    logits = model(input_ids=ids, attention_mask=mask, position_ids=(mask.cumsum(1) - 1).clamp(min=0),
                   logits_to_keep=1, use_cache=True, **{cache_argument(type(model)): cache}).logits[:, -1].float()
    layers = cache.layers if hasattr(cache, "layers") else None
    keys = [[] for _ in prompts]
    values = [[] for _ in prompts]
    for layer in range(len(layers) if layers is not None else len(cache.key_cache)):
        k = layers[layer].keys if layers is not None else cache.key_cache[layer]
        v = layers[layer].values if layers is not None else cache.value_cache[layer]
        for row, p in enumerate(prompts):
            keys[row].append(k[row, :, width - len(p):])
            values[row].append(v[row, :, width - len(p):])
    return logits, keys, values


@torch.no_grad()
def sample_continuous(model, requests: list[Request], max_new_tokens: int, stop_ids: list[int], pad_id: int,
                      slots: int = 64, top_p: float = 1.0, watch_ids: list[int] | None = None,
                      occupancy: list | None = None) -> list[list[Sampled]]:
    """Every request's `num_samples` judgments, each at most `max_new_tokens` long, decoded
    `slots` rows at a time with the batch kept full while requests wait. `occupancy`, if given,
    collects the number of busy slots at every decode step."""
    device = next(model.parameters()).device
    longest = max(len(r.prompt) for r in requests)
    slots = min(max(slots, max(r.num_samples for r in requests)), sum(r.num_samples for r in requests))
    cache = SlotCache(model, slots, longest + 2 * max_new_tokens, t=longest)
    stops = torch.tensor(stop_ids, device=device)
    watch = None if watch_ids is None else torch.tensor(watch_ids, device=device)

    # Per slot: the first column it sees, the position of its next token, its temperature, its
    # uniform numbers, how many tokens it has written, and the logits its next token comes from.
    start = torch.full((slots,), longest, dtype=torch.long, device=device)
    position = torch.zeros(slots, dtype=torch.long, device=device)
    temperature = torch.zeros(slots, device=device)
    uniforms = torch.zeros((slots, max_new_tokens), device=device)
    steps = torch.zeros(slots, dtype=torch.long, device=device)
    logits = torch.zeros((slots, model.config.vocab_size), device=device)
    owner: list[tuple[int, int] | None] = [None] * slots  # (request, sample) in each slot
    tokens: list[list[int]] = [[] for _ in range(slots)]
    logps: list[list[float]] = [[] for _ in range(slots)]
    watched: list[list[tuple]] = [[] for _ in range(slots)]
    out: list[list[Sampled | None]] = [[None] * r.num_samples for r in requests]
    # Alike lengths prefill together, and the requests of one prompt (its temperatures) follow each
    # other, so its prefill serves them all.
    queue = deque(sorted(range(len(requests)), key=lambda i: (len(requests[i].prompt), requests[i].prompt)))
    waiting = Counter(tuple(r.prompt) for r in requests)  # requests of each prompt not yet admitted
    ready: dict[tuple, tuple] = {}  # prefilled prompts that requests still wait for
    free = list(range(slots))

    def admit() -> None:
        taken = []
        while queue and len(free) >= requests[queue[0]].num_samples:
            i = queue.popleft()
            taken.append((i, [free.pop(0) for _ in range(requests[i].num_samples)]))
        if not taken:
            return
        fresh = list(dict.fromkeys(tuple(requests[i].prompt) for i, _ in taken))
        fresh = [p for p in fresh if p not in ready]
        if fresh:  # a prompt asked at several temperatures is prefilled once
            first, keys, values = prefill(model, [list(p) for p in fresh], pad_id)
            ready.update({p: (first[n], keys[n], values[n]) for n, p in enumerate(fresh)})
        for i, where in taken:
            r = requests[i]
            key = tuple(r.prompt)
            first_logits, layer_keys, layer_values = ready[key]
            waiting[key] -= 1
            if not waiting[key]:
                del ready[key]
            for j, s in enumerate(where):
                cache.place(s, layer_keys, layer_values)
                start[s], position[s], steps[s] = cache.t - len(r.prompt), len(r.prompt), 0
                temperature[s], logits[s] = r.temperature, first_logits
                if r.temperature > 0:
                    g = torch.Generator().manual_seed(derive_seed(r.seed, j))
                    uniforms[s] = torch.rand(max_new_tokens, generator=g).to(device)
                owner[s], tokens[s], logps[s], watched[s] = (i, j), [], [], []

    while True:
        admit()
        busy_list = [s for s, o in enumerate(owner) if o is not None]
        if not busy_list:
            return out
        if occupancy is not None:
            occupancy.append(len(busy_list))
        busy = torch.tensor(busy_list, device=device)
        lg = logits.index_select(0, busy)
        token = lg.argmax(-1)
        hot = temperature.index_select(0, busy)
        if bool((hot > 0).any()):
            probs = top_p_filter(torch.softmax(lg / hot.clamp(min=1e-6)[:, None], dim=-1), top_p)
            u = uniforms.index_select(0, busy).gather(1, steps.index_select(0, busy)[:, None]).squeeze(1)
            token = torch.where(hot > 0, draw_with(probs, u), token)
        chosen = torch.log_softmax(lg, dim=-1).gather(1, token[:, None]).squeeze(1)
        stopped = torch.isin(token, stops)
        looks = None if watch is None else lg.index_select(1, watch).tolist()
        steps[busy] += 1
        ended = stopped | (steps.index_select(0, busy) >= max_new_tokens)
        for n, (s, t_id, lp, stop, end) in enumerate(zip(busy_list, token.tolist(), chosen.tolist(),
                                                         stopped.tolist(), ended.tolist())):
            tokens[s].append(t_id)
            logps[s].append(lp)
            if looks is not None:
                watched[s].append(tuple(looks[n]))
            if end:
                i, j = owner[s]
                out[i][j] = Sampled(tokens[s], logps[s], stop, watched[s] if watch is not None else None)
                owner[s], start[s] = None, cache.t
                free.append(s)
        going = [s for s, o in enumerate(owner) if o is not None]
        if not going:
            continue  # nothing to decode: admit the next requests, or finish
        if not queue and len(going) <= len(owner) // 2:  # the tail: drop the idle slots
            idx = torch.tensor(going, device=device)
            cache.keep(idx)
            start, position, temperature = start[idx], position[idx], temperature[idx]
            uniforms, steps, logits = uniforms[idx], steps[idx], logits[idx]
            owner, tokens, logps, watched = ([x[s] for s in going] for x in (owner, tokens, logps, watched))
            free, going = [], list(range(len(going)))
        if cache.t + 1 > cache.capacity:  # every live column lies within the last longest + max_new_tokens
            by = cache.t - longest - max_new_tokens
            cache.shift(by)
            start = (start - by).clamp(min=0)
        feed = torch.full((len(owner),), pad_id, dtype=torch.long)
        feed[going] = torch.tensor([tokens[s][-1] for s in going])
        cache.first = int(start[going].min())  # columns before it are no busy slot's
        with attention(model, ATTENTION):
            logits = model(input_ids=feed.to(device)[:, None], position_ids=position[:, None],
                           attention_mask=decode_mask(start, cache.first, cache.t), use_cache=True,
                           **{cache_argument(type(model)): cache}).logits[:, -1].float()
        cache.t += 1
        position = position + 1
