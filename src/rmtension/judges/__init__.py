"""Judges (shared core): scoring texts with any reward model, and the combined judges built from several."""
