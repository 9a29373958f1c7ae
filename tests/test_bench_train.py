"""Training on a bench export: `data.extra_train` adds its pairs to training only, routed by task mode,
counted in data/summary.json; bad rows stop with file:line:reason; a tiny study trains on it."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import yaml

from rmtension.bench.export import export_pairs, write_jsonl
from rmtension.bench.records import Item, Judgment, Turn
from rmtension.cli import main
from rmtension.config import load_config
from rmtension.data import build_dataset
from rmtension.errors import DataError
from studykit import tiny_config, write_config


def judge(item, reviewer, pick, task, mode):
    return Judgment(item, task, mode, reviewer, "v1", 0, pick, False, 2, 9.0)


def write_export(path: Path) -> Path:
    """Three helpful items (bench picks reply_0 = "book ...") and two red-team items (bench names
    reply_0 the more harmful one, so the pair prefers reply_1), as `rmtension bench export` writes them."""
    items = [
        Item(f"h{i}", "clinic", (Turn("user", f"clinic visit {i}"),), f"book {i} yes", f"no {i}")
        for i in range(3)
    ]
    items += [
        Item(f"r{i}", "red", (Turn("user", f"dose change {i}"),), f"take more {i}", f"ask your clinician {i}")
        for i in range(2)
    ]
    judgments = [judge(f"h{i}", "ana", 0, "clinic", "helpful") for i in range(3)]
    judgments += [judge(f"r{i}", "ana", 0, "red", "red_team") for i in range(2)]
    rows, summary = export_pairs(items, judgments, fmt="hh", aggregate="all")
    assert summary.pairs == 5
    write_jsonl(rows, path)
    return path


def export_in_training(export: Path, base: Path, fmt: str = "hh") -> dict[str, dict[str, list[str]]]:
    """objective -> split -> the ids of `export`'s pairs there, when the tiny study's data takes it
    as `data.extra_train` (no training: the data stage only). For any test holding an export, e.g.
    the browser test's: `assert export_in_training(path, tmp)["helpful"]["train"]`."""
    base.mkdir(parents=True, exist_ok=True)
    cfg = tiny_config(base)
    cfg["data"]["extra_train"] = [{"path": str(export), "format": fmt}]
    data = load_config(write_config(base, cfg)).data
    bundle = build_dataset(data, data.path)
    return {
        o: {s: [p.pair_id for p in ps if p.pair_id.startswith("extra0-")] for s, ps in by.items()}
        for o, by in bundle.splits.items()
    }


@pytest.fixture(scope="module")
def bench_study(tmp_path_factory):
    base = tmp_path_factory.mktemp("benchstudy")
    export = write_export(base / "clinic-export.jsonl")
    cfg = tiny_config(base, train={"controls": True})
    cfg["data"]["extra_train"] = [{"path": str(export)}]
    return base, write_config(base, cfg), export


def test_a_study_trains_on_an_export(bench_study):
    base, cfg_path, export = bench_study
    out = base / "run"
    assert main(["study", "--config", str(cfg_path), "--out", str(out)]) == 0
    splits = json.loads((out / "data" / "splits.json").read_text())["splits"]
    helpful_ids = [f"extra0-clinic-export/train/{line}" for line in (1, 2, 3)]
    harmless_ids = [f"extra0-clinic-export/train/{line}" for line in (4, 5)]
    for objective, ids in (("helpful", helpful_ids), ("harmless", harmless_ids)):
        for where in (objective, "mixed", f"{objective}_half"):
            assert set(ids) <= set(splits[where]["train"]), where
    other = {"helpful": harmless_ids, "harmless": helpful_ids}
    for objective, by in splits.items():
        for split, ids in by.items():
            present = {i for i in ids if i.startswith("extra0-")}
            if split != "train":
                assert present == set(), (objective, split)  # never in validation or test
            elif objective in other:
                assert present.isdisjoint(other[objective])
    summary = json.loads((out / "data" / "summary.json").read_text())
    entry = summary["extra_train"][0]
    assert entry["pairs"] == {"harmless": 2, "helpful": 3} and entry["drops"] == {}
    assert entry["sha256"] == load_config(cfg_path).data.extra_train[0].sha256
    # the helpful objective trained on 40 HH pairs (max_train_pairs) plus the three exported ones
    assert summary["objectives"]["helpful"]["train"] == 43
    resolved = yaml.safe_load((out / "config.yaml").read_text())
    assert resolved["data"]["extra_train"][0]["sha256"] == entry["sha256"]
    # the red-team pairs prefer the clinician referral (the reply not named more harmful)
    rows = [json.loads(x) for x in export.read_text().splitlines()]
    assert rows[3]["chosen"].endswith("ask your clinician 0")


def test_held_out_prompts_and_duplicates_never_join_training(bench_study, tmp_path):
    base, cfg_path, _ = bench_study
    cfg = load_config(cfg_path).data
    plain = build_dataset(cfg.model_copy(update={"extra_train": []}), cfg.path)
    val, train = plain.splits["helpful"]["val"][0], plain.splits["helpful"]["train"][0]
    render = lambda p, reply: {"chosen": "\n\nHuman: " + p.context[0].content + "\n\nAssistant: " + reply}  # noqa: E731
    rows = [
        {**render(val, "a"), "rejected": render(val, "b")["chosen"]},  # a validation prompt
        {
            **render(train, train.chosen),
            "rejected": render(train, train.rejected)["chosen"],
        },  # an HH pair again
        {**render(train, "new"), "rejected": render(train, "other")["chosen"]},  # a training prompt: fine
    ]
    path = tmp_path / "x.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    extra = load_config(
        overrides=[f"data.extra_train=[{{path: {path}, objective: helpful}}]"]
    ).data.extra_train
    bundle = build_dataset(cfg.model_copy(update={"extra_train": extra}), cfg.path)
    assert bundle.summary["extra_train"][0]["drops"] == {"duplicate": 1, "prompt_in_eval": 1}
    assert [p.pair_id for p in bundle.splits["helpful"]["train"] if p.pair_id.startswith("extra")] == [
        "extra0-x/train/3"
    ]
    assert bundle.summary["groups_in_two_splits"] == 0


def test_bad_rows_name_the_file_and_line(bench_study, tmp_path, capsys):
    base, cfg_path, export = bench_study
    bad = tmp_path / "bad.jsonl"
    lines = export.read_text().splitlines()
    bad.write_text(lines[0] + "\n" + "{not json\n")
    code = main(
        [
            "study",
            "--config",
            str(cfg_path),
            "--out",
            str(tmp_path / "r"),
            f"data.extra_train=[{{path: {bad}}}]",
        ]
    )
    err = capsys.readouterr().err.strip()
    assert code != 0 and err.startswith(f"error: {bad}:2: ") and "\n" not in err
    # a row without bench.mode and no objective set: the file, the line and what to do
    plain = tmp_path / "plain.jsonl"
    plain.write_text(json.dumps({k: v for k, v in json.loads(lines[0]).items() if k != "bench"}) + "\n")
    cfg = load_config(cfg_path, [f"data.extra_train=[{{path: {plain}}}]"]).data
    with pytest.raises(
        DataError,
        match=rf"{plain}:1: the row has no bench.mode .*\(none given\) and data.extra_train\[0\].objective is not set",
    ):
        build_dataset(cfg, cfg.path)


def test_a_pinned_digest_stops_a_changed_file(tmp_path):
    path = tmp_path / "e.jsonl"
    path.write_text("{}\n")
    digest = load_config(overrides=[f"data.extra_train=[{{path: {path}}}]"]).data.extra_train[0].sha256
    path.write_text("{} \n")
    from rmtension.errors import ConfigError

    with pytest.raises(ConfigError, match="has changed"):
        load_config(overrides=[f"data.extra_train=[{{path: {path}, sha256: {digest}}}]"])


def test_shipped_bench_config_and_its_example_export(tmp_path, monkeypatch):
    """configs/bench.yaml reads its example export, which its script regenerates byte for byte."""
    import subprocess
    import sys

    repo = Path(__file__).resolve().parents[1]
    monkeypatch.chdir(repo)  # the config's path is relative to the repository root, as the README runs it
    cfg = load_config(repo / "configs" / "bench.yaml")
    entry = cfg.data.extra_train[0]
    assert entry.objective is None and entry.sha256 is not None  # routed by each row's bench.mode
    out = tmp_path / "again.jsonl"
    env = {**os.environ, "PYTHONPATH": str(repo / "src")}
    script = repo / "configs" / "bench-example" / "make_export.py"
    subprocess.run([sys.executable, str(script), str(out)], check=True, env=env, capture_output=True)
    assert out.read_bytes() == (repo / entry.path).read_bytes()
    modes = [json.loads(x)["bench"]["mode"] for x in out.read_text().splitlines()]
    assert modes.count("helpful") == 10 and modes.count("red_team") == 3


@pytest.mark.real
def test_bench_config_on_the_real_data_routes_the_example_export(hh_root, monkeypatch):
    """configs/bench.yaml's data on the real HH-RLHF: the example export's 10 helpful and 3 red-team
    pairs join helpful and harmless training on top of the 96-pair cap, and nothing leaks."""
    repo = Path(__file__).resolve().parents[1]
    monkeypatch.chdir(repo)
    data = load_config(repo / "configs" / "bench.yaml").data
    bundle = build_dataset(data, str(hh_root))
    train = {o: bundle.splits[o]["train"] for o in ("helpful", "harmless", "mixed")}
    extra = {o: sum(p.subset == "extra0-export" for p in ps) for o, ps in train.items()}
    assert extra == {"helpful": 10, "harmless": 3, "mixed": 13}
    assert (len(train["helpful"]), len(train["harmless"])) == (96 + 10, 96 + 3)
    assert bundle.summary["extra_train"][0]["drops"] == {} and bundle.summary["groups_in_two_splits"] == 0
