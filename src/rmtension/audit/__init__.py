"""Audit suites: scenario files, their comparisons, scenario-resampled accuracy, and the study's audit stage."""
