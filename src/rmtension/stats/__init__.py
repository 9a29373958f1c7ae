"""Statistics the verdicts read beside the raw accuracies: length-controlled estimates (`length`) and the
Monte Carlo error of bootstrap bounds (`montecarlo`). Pure numpy functions, tested on hand-worked values."""
