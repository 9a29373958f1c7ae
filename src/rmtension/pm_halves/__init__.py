"""pm_halves."""
