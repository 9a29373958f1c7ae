"""The steering loop (iterated online RLHF against simulated reviewers): its reviewers, detectors,
capability set and policy checkpoints."""
