"""Judges: any sequence-classification reward model, loaded, prompted and scored as plain functions.

The shared core below the apps (`rmtension.api`, `rmtension judge`) and the study's stages.
"""
