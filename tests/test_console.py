"""What a person sees: a tiny study's console, run as a user runs it (a subprocess whose stdout and
stderr are pipes, as when `make study` is logged to a file), and the one-line error of a study
without data."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from studykit import tiny_config
from tiny import save_tiny

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
STAGES = ["prepare", "train", "eval", "tension", "conflict", "neurons", "ablation", "pm_halves", "bon", "rl"]
STAGES += ["report"]
BARS = {"trunk cache", "train", "eval", "ablation", "pm_halves", "best-of-n sampling", "rl"}
"""rmtension's bars in this study: one per long stage (the trunk cache's inside training), none per set."""
THIRD_PARTY = [
    "Loading weights",  # transformers' loading bar
    "Loading checkpoint shards",
    "Writing model shards",
    "Token indices sequence length",  # the tokenizer's note on untruncated lengths
    "Setting accelerator to CPU",  # DeepSpeed's note when accelerate looks for its engine at save time
]


def study_config(base: Path) -> Path:
    """Every stage that loads a model or draws a bar, at toy sizes. Sequences of 32 tokens are shorter
    than most rendered pairs, so encoding them meets the tokenizer's sequence-length note."""
    cfg = tiny_config(
        base,
        helpful=(("helpful-base", 40),),
        harmless=(("harmless-base", 40),),
        max_train_pairs=16,
        max_length=32,
        train={"controls": False},
        neurons={"max_pairs": 8, "ps": [20], "scorers": ["mean_act"], "rms": ["mixed"], "bf16": False},
        ablation={"max_test_pairs": 8, "random_draws": 1, "bootstrap": 100, "bf16": False},
        policy={
            "backbone": str(save_tiny(base / "policy", "llama", causal=True)),
            "precision": "fp32",
            "max_new_tokens": 4,
            "max_prompt_tokens": 32,
        },
        pm_halves={"objectives": ["helpful"]},
        bon={"n_prompts": 2, "n_samples": 4, "bootstrap": 100, "n_example_prompts": 1, "n_examples": 1},
        rl={
            "objectives": ["helpful"],
            "seeds": [0],
            "steps": 2,
            "prompts_per_step": 2,
            "k": 2,
            "max_new_tokens": 4,
            "max_prompt_tokens": 32,
            "n_prompts": 2,
            "trainable": "top:1",
            "bf16": False,
            "eval_every": 2,
            "eval_prompts": 2,
            "eval_k": 2,
            "bootstrap": 100,
        },
    )
    path = base / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.fixture(scope="module")
def console(tmp_path_factory) -> tuple[str, str]:
    base = tmp_path_factory.mktemp("console")
    cmd = [
        sys.executable,
        "-m",
        "rmtension",
        "study",
        "--config",
        str(study_config(base)),
        "--out",
        str(base / "run"),
    ]
    proc = subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout, proc.stderr


def test_no_third_party_bars_or_loading_notes(console):
    out, err = console
    for text in THIRD_PARTY:
        assert text not in out + err, text
    # stdout holds rmtension's lines and the summary table's rows, nothing else
    assert all(line.startswith(("[rmtension] ", "  ")) for line in out.splitlines()), out
    # stderr holds rmtension's bars only: every draw (between carriage returns) is one of them
    draws = [d.strip() for d in re.split(r"[\r\n]", err) if d.strip()]
    assert draws and all(d.startswith("[rmtension] ") for d in draws), err[-3000:]


def test_one_bar_per_long_stage_each_drawn_a_few_times_into_a_pipe(console):
    _, err = console
    draws = [d.strip() for d in re.split(r"[\r\n]", err) if d.strip()]
    names = [d.removeprefix("[rmtension] ").split(":")[0] for d in draws]
    assert set(names) == BARS
    for name in BARS:
        started = [d for d in draws if d.startswith(f"[rmtension] {name}:") and " 0%|" in d]
        assert len(started) == 1, name  # one bar, not one per set or per model
        # not a redraw per update: into a pipe a bar draws at its start, every 30 s, and at its end
        assert 2 <= names.count(name) <= 3, (name, names.count(name))


def test_each_stage_starts_and_ends_in_order_then_the_summary(console):
    out, _ = console
    lines = out.splitlines()
    stage_line = re.compile(r"\[rmtension\] stage (\d+)/(\d+) (\S+): (started|done in (\d+\.\ds|\d+m\d\ds))")
    found = [(i, m) for i, m in enumerate(map(stage_line.fullmatch, lines)) if m]
    n = str(len(STAGES))
    expected = [(str(k), n, s, e) for k, s in enumerate(STAGES, start=1) for e in ("started", "done")]
    assert [(*m.groups()[:3], m[4].split(" in ")[0]) for _, m in found] == expected
    summary = lines[found[-1][0] + 1 :]
    assert summary[0] == "[rmtension] stage times: " + ", ".join(
        f"{s} {m[5]}" for s, (_, m) in zip(STAGES, found[1::2])
    )
    assert summary[1] == "[rmtension] tension table (accuracy, mean over seeds [95% CI]):"
    assert any(line.startswith("  mixed ") for line in summary)
    assert summary[-2].startswith("[rmtension] done in ") and summary[-1].startswith("[rmtension] report: ")


def closed_port() -> int:
    """A local port that nothing listens on: a connection to it is refused at once."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_study_without_data_fails_in_one_line_at_once(tmp_path):
    env = {k: v for k, v in ENV.items() if k != "RMTENSION_DATA" and "PROXY" not in k.upper()}
    env = {k: v for k, v in env.items() if k not in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")}
    env["HF_ENDPOINT"] = endpoint = f"http://127.0.0.1:{closed_port()}"
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text("data: {path: null}\n")
    # the same `main` as the `rmtension` command, with a look at what it imported before failing
    code = (
        "import sys; from rmtension.cli import main; "
        f"rc = main(['study', '--config', {str(cfg)!r}, '--out', {str(tmp_path / 'run')!r}]); "
        "print(rc, 'torch' in sys.modules)"
    )
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    seconds = time.perf_counter() - t0
    assert proc.stdout.split() == ["2", "False"]  # failed before loading torch or any model code
    err = proc.stderr.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "Traceback" not in proc.stderr
    assert f"the hub at {endpoint} is unreachable" in err[0]  # what was tried
    assert "set RMTENSION_DATA=/path/to/hh-rlhf or pass --data" in err[0] and "data.hub=false" in err[0]
    assert seconds < 10  # the datasets client's retries took about 25 s; this takes about half a second
    assert not (tmp_path / "run").exists()  # nothing was started


def test_durations_read_as_seconds_minutes_or_hours():
    from rmtension.run.log import duration

    assert [duration(s) for s in (0.04, 12.34, 59.94, 60, 245.4, 3599.6, 3725)] == [
        "0.0s",
        "12.3s",
        "59.9s",
        "1m00s",
        "4m05s",
        "1h00m",
        "1h02m",
    ]
