"""Statistics and verdicts (shared core): bootstrap CIs (`bootstrap`), length-controlled estimates
(`length`), the Monte Carlo error of bootstrap bounds (`montecarlo`), seed-level intervals (`seeds`),
the decision rules (`verdicts`) and the `Finding` every claim becomes (`finding`). Pure functions,
tested on hand-worked values."""
