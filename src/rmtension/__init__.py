"""rmtension: helpfulness/harmlessness tension in reward models."""

__version__ = "0.1.0"
