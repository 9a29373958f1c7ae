"""The comparison bench: reviewers chat with a policy, pick between two replies, and their
comparisons become training pairs for the judge (Bai et al. 2022, sec. 2.2)."""
