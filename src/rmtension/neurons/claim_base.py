"""A claim's verdict and sentence (`Claim`) and the p-value and top-p helpers the claim modules share.

`rmtension.neurons.claims` re-exports all four; `rmtension.neurons.ablation_claims` imports them from
here, so that the two claim modules do not import each other.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field


@dataclass
class Claim:
    name: str
    verdict: str
    """supported | not supported | inconclusive"""
    sentence: str
    numbers: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        return asdict(self)


def fmt_p(p: float, digits: int = 2) -> str:
    """A p-value for text: `0.031`, `2.2e-16`, and `< 1e-300` where it underflowed to 0."""
    if p != p:  # NaN
        return "n/a"
    return "< 1e-300" if p == 0 else f"{p:.{digits}g}"


def p_phrase(p: float) -> str:
    """`= 0.03` or `< 1e-300`, to follow a "p" in a sentence."""
    text = fmt_p(p)
    return text if text.startswith("<") else "= " + text


def nearest_p(values, p: float):
    """The element of `values` (percentages, as numbers or JSON keys) closest to `p`."""
    return min(values, key=lambda q: abs(float(q) - p))
