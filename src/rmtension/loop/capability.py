"""A capability set with verifiable answers: the alignment tax of the steering loop.

NOT a standard benchmark. It is generated deterministically from a seed (no download, no
contamination question) so that the loop can measure whether optimising a preference model costs
the policy skills it never trains on (Lin et al. 2024, "Mitigating the Alignment Tax of RLHF").
Four kinds of item, each with one exact answer:

    arithmetic   "What is 37 + 48?"                       -> "85"
    comparison   "Which number is larger: 412 or 398?"    -> "412"
    copying      "Repeat exactly: river stone cloud"     -> "river stone cloud"
    formatting   "Write the word 'apple' in capital letters." -> "APPLE"

Each kind has an easy and a hard level (`LEVELS`); each question follows `N_EXAMPLES` worked
examples of its kind as earlier chat turns. The mix (`DEFAULT_MIX`) is fixed so that the packaged
SmolLM2-135M-Instruct, greedy, scores 40-60%: measured 48.1% on 104 items (`CALIBRATION`).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from rmtension.data.types import Turn
from rmtension.policy.sampling import build_prompt_ids, decode_responses

ITEMS_TAG = 0x4341_5041  # "CAPA": keeps the generator's stream apart from others seeded with `seed`
WORDS = (
    "apple river stone cloud house tree bird lamp chair window garden bread music paper "
    "silver candle forest winter rabbit yellow"
).split()
INSTRUCTION = "Reply with the answer only."
N_EXAMPLES = 3
"""Worked examples before each question (multi-turn few-shot: a 135M chat model otherwise explains
instead of answering)."""


@dataclass(frozen=True)
class Item:
    """One question with its single exact answer."""

    kind: str
    """arithmetic | comparison | copying | formatting, with the level: e.g. `arithmetic/hard`."""
    prompt: str
    """The user's message."""
    answer: str
    """The expected reply after `normalise`."""
    examples: tuple[tuple[str, str], ...] = ()
    """Worked (prompt, answer) examples of the same kind and level, shown as earlier turns."""

    def turns(self) -> tuple[Turn, ...]:
        """The conversation the policy answers: the examples as user/assistant turns, then the prompt."""
        shots = [Turn(role, text) for q, a in self.examples for role, text in (("user", q), ("assistant", a))]
        return (*shots, Turn("user", self.prompt))


def _arithmetic(rng: np.random.Generator, hard: bool) -> Item:
    if hard:  # two-digit times one-digit, or a three-digit sum
        if rng.random() < 0.5:
            a, b = int(rng.integers(12, 100)), int(rng.integers(3, 10))
            return Item("arithmetic/hard", f"What is {a} * {b}? {INSTRUCTION}", str(a * b))
        a, b = int(rng.integers(100, 1000)), int(rng.integers(100, 1000))
        return Item("arithmetic/hard", f"What is {a} + {b}? {INSTRUCTION}", str(a + b))
    a, b = int(rng.integers(1, 10)), int(rng.integers(1, 10))
    return Item("arithmetic/easy", f"What is {a} + {b}? {INSTRUCTION}", str(a + b))


def _comparison(rng: np.random.Generator, hard: bool) -> Item:
    lo, hi = (100, 1000) if hard else (1, 100)
    a, b = (int(x) for x in rng.choice(np.arange(lo, hi), size=2, replace=False))
    which = "smaller" if hard and rng.random() < 0.5 else "larger"
    answer = min(a, b) if which == "smaller" else max(a, b)
    level = "hard" if hard else "easy"
    return Item(f"comparison/{level}", f"Which number is {which}: {a} or {b}? {INSTRUCTION}", str(answer))


def _copying(rng: np.random.Generator, hard: bool) -> Item:
    words = " ".join(rng.choice(WORDS, size=6 if hard else 2, replace=False))
    level = "hard" if hard else "easy"
    return Item(f"copying/{level}", f"Repeat exactly, and nothing else: {words}", words)


def _formatting(rng: np.random.Generator, hard: bool) -> Item:
    if hard:  # words in reverse order, comma-separated
        words = list(rng.choice(WORDS, size=3, replace=False))
        prompt = f"Write these words in reverse order, separated by commas: {' '.join(words)}. {INSTRUCTION}"
        return Item("formatting/hard", prompt, ", ".join(reversed(words)))
    word = str(rng.choice(WORDS))
    return Item("formatting/easy", f"Write the word '{word}' in capital letters. {INSTRUCTION}", word.upper())


MAKERS = {
    "arithmetic": _arithmetic,
    "comparison": _comparison,
    "copying": _copying,
    "formatting": _formatting,
}
LEVELS = ("easy", "hard")

# Calibration, fixed before any loop run: `rmtension loop capability --n 104 --seed 0` (SmolLM2-135M-
# Instruct, fp32, greedy, MAX_NEW_TOKENS, 3 worked examples per item; AVX2 CPU, 2 cores shared with
# other jobs, 799 s wall) scored 50 / 104 = 48.1% with the equal mix below; by kind/level:
CALIBRATION: dict[str, float] = {
    "arithmetic/easy": 2 / 13,
    "arithmetic/hard": 0 / 13,
    "comparison/easy": 6 / 13,
    "comparison/hard": 6 / 13,
    "copying/easy": 13 / 13,
    "copying/hard": 9 / 13,
    "formatting/easy": 10 / 13,
    "formatting/hard": 4 / 13,
}
"""kind/level -> SmolLM2-135M-Instruct's measured accuracy on 13 items each (the numbers behind `DEFAULT_MIX`).
Comparisons sit near the 50% of guessing: the initial policy has no skill there to lose, but a
policy that learns to pick the first number, or to explain instead of answer, shows up."""
DEFAULT_MIX: dict[str, float] = {key: 1.0 for key in CALIBRATION}
"""kind/level -> share of the items: equal shares, which put the initial policy at 48%, inside the
40-60% the loop's alignment tax needs (room to fall and to rise)."""


def quotas(n: int, mix: dict[str, float]) -> list[str]:
    """n kind/level labels in the proportions of `mix` (largest remainders), in `mix` order."""
    total = sum(mix.values())
    exact = {k: n * w / total for k, w in mix.items()}
    count = {k: int(v) for k, v in exact.items()}
    by_remainder = sorted(mix, key=lambda k: (-(exact[k] - count[k]), list(mix).index(k)))
    for k in by_remainder[: n - sum(count.values())]:
        count[k] += 1
    return [k for k in mix for _ in range(count[k])]


def generate_items(n: int, seed: int = 0, mix: dict[str, float] | None = None) -> list[Item]:
    """n items in a seeded random order; the same (n, seed, mix) always gives the same items."""
    mix = DEFAULT_MIX if mix is None else mix
    for key in mix:
        kind, _, level = key.partition("/")
        if kind not in MAKERS or level not in LEVELS:
            raise ValueError(
                f"mix key {key!r} is not <kind>/<level> with kind in {sorted(MAKERS)}, level in {LEVELS}"
            )
    rng = np.random.default_rng([ITEMS_TAG, seed])
    labels = quotas(n, mix)
    labels = [labels[i] for i in rng.permutation(len(labels))]
    items = []
    for label in labels:
        kind, _, level = label.partition("/")
        make = MAKERS[kind]
        item = make(rng, level == "hard")
        shots = [make(rng, level == "hard") for _ in range(N_EXAMPLES)]
        items.append(Item(item.kind, item.prompt, item.answer, tuple((e.prompt, e.answer) for e in shots)))
    return items


_WRAPPERS = "\"'`*"


def normalise(reply: str) -> str:
    """The scored form of a reply: its first non-empty line, whitespace runs collapsed to one space,
    wrapping quotes / backticks / asterisks and one trailing period removed. Case is kept (the
    formatting items test it), and nothing else is extracted: "The answer is 85" is not "85"."""
    lines = [line for line in reply.strip().splitlines() if line.strip()]
    text = " ".join(lines[0].split()) if lines else ""
    text = text.strip(_WRAPPERS).strip()
    text = re.sub(r"\.$", "", text).strip(_WRAPPERS).strip()
    return text


def exact_match(replies: Sequence[str], items: Sequence[Item]) -> np.ndarray:
    """[N] replies, [N] items -> [N] bool: normalise(reply) == item.answer."""
    if len(replies) != len(items):
        raise ValueError(f"{len(replies)} replies for {len(items)} items")
    return np.array([normalise(r) == it.answer for r, it in zip(replies, items)], dtype=bool)


MAX_NEW_TOKENS = 12
"""Reply budget: the longest answer (six copied words) takes about 8 SmolLM2 tokens."""


@dataclass
class CapabilityScore:
    """A policy's exact-match accuracy on the items, overall and by kind/level."""

    accuracy: float
    by_kind: dict[str, float]
    correct: np.ndarray
    """[N] bool, in item order."""
    replies: list[str]


def score_policy(policy, items: Sequence[Item], max_new_tokens: int = MAX_NEW_TOKENS, batch_size: int = 32):
    """Greedy replies of `policy` (a `rmtension.policy.sampling.Policy`) to the items, exact-match scored."""
    ids = [build_prompt_ids(policy.tokenizer, it.turns(), 1 << 12) for it in items]
    drawn = policy.draw(ids, n=1, max_new_tokens=max_new_tokens, temperature=0.0, batch_size=batch_size)
    replies = decode_responses(policy.tokenizer, drawn.tokens)
    correct = exact_match(replies, items)
    kinds = sorted({it.kind for it in items})
    by_kind = {k: float(np.mean([c for c, it in zip(correct, items) if it.kind == k])) for k in kinds}
    return CapabilityScore(float(correct.mean()), by_kind, correct, replies)
