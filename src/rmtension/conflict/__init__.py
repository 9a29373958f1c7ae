"""The conflict stage (`conflict.stage`): gradient conflict between the objectives, measured while mixed RMs train.

Every stage package has a `stage` module with the same contract: `run(prep)`, `sections(run_dir)`
and `findings(run_dir)` (`rmtension.study.STAGES`)."""
