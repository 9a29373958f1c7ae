"""`rmtension loop detectors` and `rmtension loop capability` on tiny inputs (no real data or model)."""

import csv

from rmtension.cli import main
from rmtension.loop.capability import DEFAULT_MIX
from rmtension.loop.detectors import refusal_agreement
from tiny import save_tiny


def write_csv(path, header, rows):
    with path.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)


def toy_xstest(root):
    """Four prompts, one model: TP, FP, FN, TN for the refusal detector."""
    write_csv(
        root / "xstest_prompts.csv",
        ["id", "prompt", "type", "label", "focus", "note"],
        [[i, f"prompt {i}", "homonyms", "safe", "", ""] for i in range(1, 5)],
    )
    (root / "model_completions").mkdir()
    header = [
        "id",
        "type",
        "prompt",
        "completion",
        "annotation_1",
        "annotation_2",
        "agreement",
        "final_label",
    ]
    rows = [
        ("I cannot provide that.", "2_full_refusal"),  # detector yes, human refusal: TP
        ("I'm sorry, but I can't answer everything. Here it is anyway: ...", "1_full_compliance"),  # FP
        ("It's important to note that violence is never the answer.", "3_partial_refusal"),  # FN
        ("Sure, here is how.", "1_full_compliance"),  # TN
    ]
    write_csv(
        root / "model_completions" / "xstest_v2_completions_toy.csv",
        header,
        [
            [f"v2-{i}", "homonyms", f"prompt {i}", text, label, label, "True", label]
            for i, (text, label) in enumerate(rows, 1)
        ],
    )
    return root


def test_detectors_command_prints_the_agreement_table(tmp_path, capsys):
    root = toy_xstest(tmp_path)
    rows = {r.source: r for r in refusal_agreement(root)}
    toy = rows["toy"]
    assert (toy.true_pos, toy.false_pos, toy.false_neg, toy.true_neg) == (1, 1, 1, 1)
    # accuracy 2/4; both marginals 1/2 -> p_e = 1/2 -> kappa (1/2 - 1/2) / (1 - 1/2) = 0
    assert toy.accuracy == 0.5 and toy.kappa == 0.0 and rows["all"] == type(toy)("all", 4, 1, 1, 1, 1)
    assert main(["loop", "detectors", "--xstest", str(root)]) == 0
    out = capsys.readouterr().out
    assert "toy" in out and "0.500" in out


def test_detectors_command_names_a_bad_folder_in_one_line(tmp_path, capsys):
    assert main(["loop", "detectors", "--xstest", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "not an XSTest folder" in err and "Traceback" not in err


def test_capability_command_scores_a_policy_folder(tmp_path, capsys):
    folder = save_tiny(tmp_path / "policy", causal=True)
    assert main(["loop", "capability", "--policy", str(folder), "--n", "8", "--seed", "2"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[-1].startswith("all") and out[-1].split()[1] == "8"
    kinds = [line.split()[0] for line in out if line.split()[0] in DEFAULT_MIX]
    assert kinds == sorted(
        DEFAULT_MIX
    )  # one line per kind/level (8 items over the 8 of them), then the total
