"""The eval stage (`eval.stage`): every RM's per-pair scores on every test set.

Every stage package has a `stage` module with the same contract: `run(prep)`, `sections(run_dir)`
and `findings(run_dir)` (`rmtension.study.STAGES`)."""
