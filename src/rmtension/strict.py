"""The one base of every config model, and the one list of objectives.

It imports nothing of rmtension, so every stage's config module can build on it without an
import cycle through `rmtension.config`, which combines them all.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

OBJECTIVES = ("helpful", "harmless", "mixed")
CONTROL_DATA = ("helpful_half", "harmless_half")
"""Training sets of the dilution controls: each single objective's share of the mixed training set."""
"""The objectives a study trains one reward model for, per seed; they also drive the data."""


class Strict(BaseModel):
    """Base: unknown keys are errors; field docstrings are the documentation."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True, validate_assignment=True)
