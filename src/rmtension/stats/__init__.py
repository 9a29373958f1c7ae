"""Statistics and verdicts (shared core): bootstrap CIs, the decision rules, and the `Finding` every claim becomes."""
