"""`rmtension judge eval|dissect`: the command line over `rmtension.api`, and its comparison report."""
