"""The prompt format a judge reads: HH turns, or the tokenizer's own chat template.

`hh` writes `\\n\\nHuman: ...\\n\\nAssistant: ...` (`rmtension.data.types.render_transcript`), the text
every RM the study trains reads. `chat` writes the conversation through the tokenizer's chat template,
as chat-tuned RMs (Skywork-Reward, ArmoRM) were trained on; the template's text carries its own
special tokens. `auto` takes the chat template where the tokenizer has one, HH where it has none; a tokenizer whose
template exists but cannot render a plain conversation fits neither, and `auto` says so in one line.
"""

from __future__ import annotations

from collections.abc import Sequence

from rmtension.data.types import Turn, render_transcript
from rmtension.errors import RmtensionError
from rmtension.model.encode import Render

TEMPLATES = ("hh", "chat", "auto")
PROBE = (Turn("user", "Can I move my appointment to Friday?"),)


def messages(context: Sequence[Turn], reply: str) -> list[dict[str, str]]:
    """The conversation and its final assistant reply as chat-template messages."""
    return [{"role": t.role, "content": t.content} for t in context] + [
        {"role": "assistant", "content": reply}
    ]


def chat_render(tokenizer) -> Render:
    """A renderer through `tokenizer`'s chat template (text, not ids: the encoder tokenises it)."""

    def render(context: tuple[Turn, ...], reply: str) -> str:
        return tokenizer.apply_chat_template(messages(context, reply), tokenize=False)

    return render


def template_problem(tokenizer) -> str | None:
    """Why `tokenizer`'s chat template cannot render a one-turn conversation; None when it can."""
    if not getattr(tokenizer, "chat_template", None):
        return "its tokenizer has no chat template"
    try:
        text = chat_render(tokenizer)(PROBE, "Yes, Friday at 10 works.")
    except Exception as e:  # a template's own raise_exception, a jinja error: the template does not fit
        return f"its chat template fails on a one-turn conversation ({str(e).splitlines()[0][:120]})"
    if "Yes, Friday at 10 works." not in text:
        return "its chat template drops the assistant reply"
    return None


def resolve_template(template: str, tokenizer, source: str) -> str:
    """`hh` or `chat` for `template` (`hh`, `chat` or `auto`); a one-line error where it does not fit."""
    if template not in TEMPLATES:
        raise RmtensionError(f"{source}: template {template!r} is not one of {', '.join(TEMPLATES)}")
    if template == "hh":
        return "hh"
    problem = template_problem(tokenizer)
    if problem is None:
        return "chat"
    if template == "chat":
        raise RmtensionError(f"{source}: template chat does not fit: {problem}; use template hh")
    if getattr(tokenizer, "chat_template", None):  # a chat-tuned tokenizer whose template is broken
        raise RmtensionError(
            f"{source}: neither template fits: {problem}, and HH turns are not what a chat-tuned "
            "judge reads; pass template hh to use them anyway"
        )
    return "hh"


def renderer(template: str, tokenizer) -> tuple[Render, bool]:
    """(render, whether the tokenizer adds its special tokens) for a resolved template."""
    if template == "chat":
        return chat_render(tokenizer), False
    return render_transcript, True
