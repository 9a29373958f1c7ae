"""Quiet third-party consoles: rmtension prints its own stage lines and bars, so libraries' loading
bars and notes are noise between them.

What is silenced, and how a real problem still shows:

- transformers' and huggingface_hub's progress bars ("Loading weights", "Writing model shards",
  downloads) and `datasets`' bars, by each library's own switch. Their errors are exceptions and
  still stop the run with rmtension's one-line message.
- `datasets`' log below ERROR (dataset-card notes while it fetches `Anthropic/hh-rlhf`).
- DeepSpeed's "Setting accelerator to CPU" note, logged when accelerate looks for a DeepSpeed engine
  while a model is saved on a machine without a GPU. Only that message is dropped; DeepSpeed's other
  warnings still show.
- transformers' note at a fresh score head is turned down only around the load that expects it
  (`rmtension.model.backbones.load_reward_model`), and the tokenizer's "longer than the specified
  maximum sequence length" note only in the calls that measure untruncated lengths
  (`rmtension.model.encode`): rmtension truncates every sequence it runs itself.

Imports inside functions: the third-party loggers load only when a study quiets them.
"""

from __future__ import annotations

import logging
import sys


def quiet_third_party() -> None:
    """Turn the third-party bars and notes above off for this process (idempotent, cheap)."""
    from huggingface_hub.utils import disable_progress_bars
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    disable_progress_bars()
    if "datasets" in sys.modules:  # imported only for the hub download; importing it here costs a second
        quiet_datasets()
    deepspeed = logging.getLogger("DeepSpeed")  # the logger DeepSpeed creates on import, by this name
    if drop_cpu_fallback_note not in deepspeed.filters:
        deepspeed.addFilter(drop_cpu_fallback_note)


def quiet_datasets() -> None:
    """`datasets`' progress bars off and its log at ERROR."""
    import datasets

    datasets.disable_progress_bars()
    datasets.utils.logging.set_verbosity_error()


def drop_cpu_fallback_note(record: logging.LogRecord) -> bool:
    """A logging filter: False (drop) for DeepSpeed's note that it found no GPU and uses the CPU."""
    return not record.getMessage().startswith("Setting accelerator to CPU")
