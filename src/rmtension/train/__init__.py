"""The train stage (`train.stage`): the study's reward models, trained by the core trainer (`rmtension.trainer`).

Every stage package has a `stage` module with the same contract: `run(prep)`, `sections(run_dir)`
and `findings(run_dir)` (`rmtension.study.STAGES`)."""
