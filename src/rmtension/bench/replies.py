"""Where live replies come from: the task's policies, streamed token by token.

One policy: two samples of it (the shared conversation prefilled once); two policies: one
reply from each. Policies load on first use and stay loaded; one generation runs at a time,
since the model already uses every core.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass, field

from rmtension.bench.records import Turn
from rmtension.bench.task import SourceConfig
from rmtension.policy.config import PolicyConfig
from rmtension.policy.sampling import Policy, open_policy
from rmtension.policy.stream import ReplyDone, stream_pair


@dataclass
class PolicyReplies:
    """Streams two replies to a conversation from the policies a task names."""

    source: SourceConfig
    cache_dir: str | None = None
    _policies: list[Policy] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def policies(self) -> list[Policy]:
        if not self._policies:
            for name in self.source.policies:
                cfg = PolicyConfig(backbone=name, sampling_weights=self.source.sampling_weights)
                self._policies.append(open_policy(cfg, self.cache_dir, precision="fp32"))
        return self._policies

    def stream(self, turns: tuple[Turn, ...], seed: int) -> Iterator[tuple]:
        """("delta", which, text) as each reply grows, then ("done", which, final text, settings) per reply.

        `which` is 0 or 1 in canonical order; settings name the model and sampling of that reply."""
        messages = [{"role": t.role, "content": t.content} for t in turns]
        with self._lock:
            events = stream_pair(
                self.policies(),
                messages,
                max_new_tokens=self.source.max_new_tokens,
                temperature=self.source.temperature,
                top_p=self.source.top_p,
                top_k=self.source.top_k,
                seed=seed,
            )
            for event in events:
                if isinstance(event, ReplyDone):
                    yield ("done", event.which, event.text, {**event.settings, "finished": event.finished})
                else:
                    yield ("delta", event.which, event.text)
