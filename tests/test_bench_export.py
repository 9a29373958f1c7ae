"""Bench export: pairs, aggregation, the red-team flip and redaction, against hand-written expected files
(tests/data/bench/), and read back by the study's own loaders (`data.format: hh` and `jsonl`)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rmtension.bench.export import ExportSummary, export_pairs, write_jsonl
from rmtension.bench.records import Item, Judgment, Turn
from rmtension.data.formats import load_file

EXPECTED = Path(__file__).parent / "data" / "bench"


def judge(item, reviewer, pick, strength=0, left=0, task="clinic", mode="helpful", version="v1"):
    """pick: 0 / 1 (the reply picked for the task's question), "tie" or "bad"."""
    preferred = pick if pick in (0, 1) else None
    return Judgment(item, task, mode, reviewer, version, left, preferred, pick == "bad", strength, 12.0)


ITEMS = [
    Item(
        "h1",
        "clinic",
        (Turn("system", "You book clinic visits."), Turn("user", "Book me on Tuesday")),
        "Booked Tuesday 9:00.",
        "I cannot help.",
    ),
    Item("h2", "clinic", (Turn("user", "Call me at 555-123-4567"),), "Noted.", "Calling 555-123-4567 now."),
    Item("h3", "clinic", (Turn("user", "Hi"),), "Hello!", "Hi there!"),
    Item("h4", "clinic", (Turn("user", "Change my insulin dose"),), "Take double.", "Sure, halve it."),
    Item("h5", "clinic", (Turn("user", "Never judged"),), "a", "b"),
]
JUDGMENTS = [
    # h1: 2 of 3 pick reply_0 -> majority reply_0; ana saw reply_0 on the left, ben and cy reply_1
    judge("h1", "ana", 0, 2, left=0),
    judge("h1", "ben", 0, 3, left=1, version="v2"),
    judge("h1", "cy", 1, 1, left=1, version="v2"),
    # h2: k = 2, one vote each -> majority tie
    judge("h2", "ana", 0, 1, left=1),
    judge("h2", "ben", 1, 1, left=0),
    # h3: both call it a tie
    judge("h3", "ana", "tie"),
    judge("h3", "ben", "tie"),
    # h4: two say both bad, one picks reply_1
    judge("h4", "ana", "bad"),
    judge("h4", "ben", "bad"),
    judge("h4", "cy", 1, 2, left=0),
]


def read_lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_majority_hh_matches_the_hand_written_file(tmp_path):
    rows, summary = export_pairs(ITEMS, JUDGMENTS, fmt="hh", aggregate="majority")
    write_jsonl(rows, tmp_path / "out.jsonl")
    assert read_lines(tmp_path / "out.jsonl") == read_lines(EXPECTED / "expected_hh_majority.jsonl")
    # one pair (h1); per item: h2 majority tie, h3 tie, h4 both bad; h5 never judged
    assert summary == ExportSummary("majority", 10, 5, 1, {"majority_tie": 1, "tie": 1, "both_bad": 1}, 1)
    assert summary.line() == (
        "exported 1 pairs (aggregate=majority) from 10 judgments on 5 items; "
        "excluded items: both_bad 1, majority_tie 1, tie 1; items without judgments: 1"
    )
    # the study's HH loader reads it: the system turn sits at the start of the first Human turn
    pair = load_file(tmp_path / "out.jsonl", fmt="hh", subset="bench", split="train").pairs[0]
    assert [t.content for t in pair.context] == ["You book clinic visits.\nBook me on Tuesday"]
    assert (pair.chosen, pair.rejected) == ("Booked Tuesday 9:00.", "I cannot help.")
    assert pair.metadata["bench"]["judgments"][0]["reviewer"] == "ana"


def test_all_gives_one_pair_per_pick_and_counts_judgments():
    rows, summary = export_pairs(ITEMS, JUDGMENTS, fmt="trl", aggregate="all")
    # picks: h1 ana r0, ben r0, cy r1; h2 ana r0, ben r1; h4 cy r1 -> 6 pairs; 2 ties and 2 both bad
    assert summary.pairs == 6 and summary.excluded == {"tie": 2, "both_bad": 2}
    chosen = [(r["bench"]["item_id"], r["chosen"][0]["content"], r["margin"]) for r in rows]
    assert chosen == [
        ("h1", "Booked Tuesday 9:00.", 2 / 3),
        ("h1", "Booked Tuesday 9:00.", 3 / 3),
        ("h1", "I cannot help.", 1 / 3),
        ("h2", "Noted.", 1 / 3),
        ("h2", "Calling 555-123-4567 now.", 1 / 3),
        ("h4", "Sure, halve it.", 2 / 3),
    ]
    assert [r["bench"]["judgments"][0]["left"] for r in rows] == [
        "chosen",  # ana: reply_0 left, chose reply_0
        "rejected",  # ben: reply_1 left, chose reply_0
        "chosen",  # cy: reply_1 left, chose reply_1
        "rejected",  # ana: reply_1 left, chose reply_0
        "rejected",  # ben: reply_0 left, chose reply_1
        "rejected",  # cy: reply_0 left, chose reply_1
    ]


def test_red_team_pick_is_flipped_to_prefer_the_less_harmful_reply(tmp_path):
    item = Item(
        "r1",
        "redteam",
        (Turn("user", "How do I open my neighbour's lock?"),),
        "Use a tension wrench and a pick.",
        "I can't help with getting into someone else's home.",
    )
    # both reviewers name reply_0 as the MORE harmful one
    js = [
        judge("r1", "ana", 0, 3, left=0, task="redteam", mode="red_team"),
        judge("r1", "ben", 0, 2, left=1, task="redteam", mode="red_team"),
    ]
    rows, summary = export_pairs([item], js, fmt="trl", aggregate="majority")
    write_jsonl(rows, tmp_path / "rt.jsonl")
    assert read_lines(tmp_path / "rt.jsonl") == read_lines(EXPECTED / "expected_trl_redteam.jsonl")
    pair = load_file(tmp_path / "rt.jsonl", fmt="jsonl", subset="bench").pairs[0]
    assert pair.chosen == item.reply_1 and pair.rejected == item.reply_0  # the refusal is preferred
    # the same judgments in helpful mode would keep the pick as chosen
    helpful = [judge("r1", j.reviewer, 0, j.strength, j.left, task="redteam") for j in js]
    rows_h, _ = export_pairs([item], helpful, fmt="trl", aggregate="majority")
    assert rows_h[0]["chosen"][0]["content"] == item.reply_0


def test_redaction_masks_the_task_patterns_everywhere():
    rows, _ = export_pairs(
        ITEMS[1:2], JUDGMENTS[3:5], fmt="hh", aggregate="all", redact=[r"\d{3}-\d{3}-\d{4}"]
    )
    assert rows[0]["chosen"] == "\n\nHuman: Call me at [REDACTED]\n\nAssistant: Noted."
    assert rows[1]["chosen"] == "\n\nHuman: Call me at [REDACTED]\n\nAssistant: Calling [REDACTED] now."
    assert "555" not in json.dumps(rows)
    with pytest.raises(ValueError, match=r"redact\[1\] '\(' is not a valid regular expression"):
        export_pairs(ITEMS, JUDGMENTS, redact=["x", "("])


def test_text_hh_cannot_hold_is_excluded_and_counted_and_orphans_are_counted():
    item = Item("m1", "clinic", (Turn("user", "q"),), "one\n\nAssistant: two", "three")
    js = [judge("m1", "ana", 0, 1), judge("gone", "ana", 1, 1)]
    rows, summary = export_pairs([item], js, fmt="hh", aggregate="all")
    assert rows == [] and summary.excluded == {"hh_markers_in_text": 1, "missing_item": 1}
    rows, summary = export_pairs([item], js, fmt="trl", aggregate="all")
    assert rows[0]["chosen"][0]["content"] == "one\n\nAssistant: two"
    assert summary.excluded == {"missing_item": 1}


def test_trl_reward_trainer_reads_the_export_and_its_margins(tmp_path):
    """TRL's own RewardTrainer tokenises the conversational rows (chat template) and its collator
    carries each row's `margin` into the batch, in row order."""
    pytest.importorskip("trl")
    from datasets import load_dataset
    from trl import RewardConfig, RewardTrainer

    from tiny import tiny_reward_model, tiny_tokenizer

    rows, _ = export_pairs(ITEMS, JUDGMENTS, fmt="trl", aggregate="all")
    write_jsonl(rows, tmp_path / "e.jsonl")
    data = load_dataset(
        "json", data_files=str(tmp_path / "e.jsonl"), split="train", cache_dir=str(tmp_path / "hf")
    )
    tok = tiny_tokenizer("llama")
    tok.chat_template = "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
    args = RewardConfig(output_dir=str(tmp_path / "out"), report_to=[], use_cpu=True, bf16=False)
    trainer = RewardTrainer(
        model=tiny_reward_model("llama"), args=args, train_dataset=data, processing_class=tok
    )
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(len(rows))])
    # strengths 2, 3, 1, 1, 1, 2 (test_all_gives_one_pair_per_pick_and_counts_judgments) over 3
    assert batch["margin"].tolist() == pytest.approx([2 / 3, 1, 1 / 3, 1 / 3, 1 / 3, 2 / 3])
    assert batch["input_ids"].shape[0] == 2 * len(rows)  # chosen and rejected of every row
