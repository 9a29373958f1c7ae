"""The tension stage (`tension.stage`): the tension table, calibration and XSTest behaviour, and their claims.

Every stage package has a `stage` module with the same contract: `run(prep)`, `sections(run_dir)`
and `findings(run_dir)` (`rmtension.study.STAGES`)."""
