"""Running a study: the context handed to stages, console lines, run-directory IO, processes, shards,
interrupts and trackers."""
