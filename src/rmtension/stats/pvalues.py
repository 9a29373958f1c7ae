"""p-values as text and the nearest top-p: helpers the claims and the reports share."""

from __future__ import annotations


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
