"""Load any HF sequence-classification reward model as a judge: a folder or a hub id, safetensors only.

A judge is the model, its tokenizer and how to read it: the prompt format (`rmtension.judges.template`),
the head of a multi-head RM (`rmtension.model.heads`), and the sign (-1 for cost models, where lower
means better: every reward it returns is negated, so "higher is better" holds for every judge).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from torch import nn

from rmtension.data.types import Pair
from rmtension.errors import RmtensionError
from rmtension.judges.template import renderer, resolve_template
from rmtension.model.backbones import load_reward_model, load_tokenizer, resolve_backbone
from rmtension.model.encode import EncodedPairs, encode_pairs
from rmtension.model.heads import HEAD_PATHS, HEADS, single_head
from rmtension.run.quiet import quiet_third_party

DEFAULT_MAX_LENGTH = 512


@dataclass
class Judge:
    """A loaded reward model and how it reads a conversation."""

    name: str
    """Short name for files and tables (`harmless-seed0`, a hub id's last part)."""
    source: str
    """The folder or hub id it was loaded from, as given."""
    model: nn.Module
    tokenizer: object
    template: str
    """`hh` or `chat` (resolved from `auto`)."""
    sign: int = 1
    head: str | None = None
    max_length: int = DEFAULT_MAX_LENGTH
    fresh_head: bool | None = None
    """True where the folder holds no score head (a backbone: the head is random); None: not known (hub)."""

    def encode(self, pairs: list[Pair]) -> EncodedPairs:
        """Token ids of chosen and rejected of every pair, in this judge's prompt format."""
        render, special = renderer(self.template, self.tokenizer)
        try:
            return encode_pairs(pairs, self.tokenizer, self.max_length, render, special)
        except Exception as e:  # a template that rejects one conversation (roles out of order, ...)
            bad = _first_unrenderable(pairs, render)
            raise RmtensionError(
                f"{self.source}: its {self.template} template cannot render pair {bad}: "
                f"{str(e).splitlines()[0][:160]}"
            ) from None

    def describe(self) -> dict:
        """What the results record about the judge."""
        return {
            "name": self.name,
            "source": self.source,
            "template": self.template,
            "sign": self.sign,
            "head": self.head,
            "max_length": self.max_length,
            "architecture": type(self.model).__name__,
            "fresh_head": self.fresh_head,
        }


def _first_unrenderable(pairs: list[Pair], render) -> str:
    for p in pairs:
        try:
            render(p.context, p.chosen)
        except Exception:
            return f"{p.pair_id} ({p.source}:{p.line})"
    return "?"


def judge_name(source: str) -> str:
    """`runs/x/rm/harmless/seed0` -> `harmless-seed0`; `org/model` -> `model`; a file-safe name."""
    parts = Path(source.rstrip("/")).parts
    name = parts[-1] if parts else source
    if re.fullmatch(r"seed\d+", name) and len(parts) > 1:
        name = f"{parts[-2]}-{name}"
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "judge"


def check_sequence_classifier(path: str, trust_remote_code: bool) -> None:
    """One line saying why `path`'s config does not load as a sequence classifier; nothing when it does."""
    from transformers import AutoConfig
    from transformers.models.auto.modeling_auto import MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES

    try:
        config = AutoConfig.from_pretrained(path, trust_remote_code=trust_remote_code)
    except (OSError, ValueError, KeyError) as e:
        raise RmtensionError(f"{path}: no loadable model config ({str(e).splitlines()[0][:200]})") from None
    kind = getattr(config, "model_type", None)
    remote = trust_remote_code and "AutoModelForSequenceClassification" in (
        getattr(config, "auto_map", None) or {}
    )
    if kind not in MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES and not remote:
        raise RmtensionError(
            f"{path}: its config is a {kind!r} model, which has no sequence-classification head in "
            "transformers, so it cannot be a reward model here"
        )


def has_score_head(path: str) -> bool | None:
    """Whether a local folder's safetensors hold a score head (`score.*`/`classifier.*`); None for a hub id."""
    from safetensors import safe_open

    files = sorted(Path(path).glob("*.safetensors")) if Path(path).is_dir() else []
    if not files:
        return None
    for f in files:
        with safe_open(str(f), framework="pt") as st:
            if any(k.split(".")[-2] in HEAD_PATHS for k in st.keys() if k.count(".") >= 1):
                return True
    return False


def _load_model(path: str, tokenizer, trust_remote_code: bool, head: str | None) -> nn.Module:
    """The one-head model: rmtension's own multi-head RMs by `load_reward_model`'s head names; any other
    K-label RM loads with its K heads (their saved names, nothing re-initialised) and keeps `head`."""
    from transformers import AutoConfig

    labels = AutoConfig.from_pretrained(path, trust_remote_code=trust_remote_code).id2label
    names = tuple(str(labels[k]) for k in sorted(labels, key=int))
    # a backbone's config names default labels (LABEL_0, LABEL_1) for a head it does not have
    if len(names) <= 1 or set(names) <= set(HEADS) or has_score_head(path) is False:
        return load_reward_model(path, tokenizer, trust_remote_code, head=head)
    model = load_reward_model(path, tokenizer, trust_remote_code, heads=names)
    return single_head(model, head) if head is not None else model


def load_judge(
    path_or_id: str,
    *,
    head: str | None = None,
    sign: int = 1,
    template: str = "auto",
    max_length: int = DEFAULT_MAX_LENGTH,
    trust_remote_code: bool = False,
    name: str | None = None,
    cache_dir: str | None = None,
) -> Judge:
    """Load a reward model from a folder, a hub id or a backbone registry name (`minilm`).

    `head`: one head of a multi-head RM (its `config.id2label` names them). `sign`: 1, or -1 for a
    cost model. `template`: `hh`, `chat` or `auto` (`rmtension.judges.template`). Weights load from
    safetensors only, and the repository's own code runs only with `trust_remote_code=True`.
    """
    if sign not in (1, -1):
        raise RmtensionError(f"{path_or_id}: sign must be 1 or -1, got {sign}")
    quiet_third_party()
    path = resolve_backbone(path_or_id, cache_dir)
    check_sequence_classifier(path, trust_remote_code)
    tokenizer = load_tokenizer(path, max_length, trust_remote_code)
    resolved = resolve_template(template, tokenizer, path_or_id)
    model = _load_model(path, tokenizer, trust_remote_code, head)
    if int(model.config.num_labels) != 1:
        raise RmtensionError(
            f"{path_or_id}: {model.config.num_labels} score heads "
            f"({', '.join(map(str, model.config.id2label.values()))}); pick one with head=..."
        )
    model.eval()
    return Judge(
        name=name or judge_name(path_or_id),
        source=path_or_id,
        model=model,
        tokenizer=tokenizer,
        template=resolved,
        sign=sign,
        head=head,
        max_length=max_length,
        fresh_head=None if (found := has_score_head(path)) is None else not found,
    )
