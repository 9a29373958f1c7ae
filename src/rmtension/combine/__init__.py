"""Combining the two objectives into one judge: fixed dials over two RMs' or two heads' standardised
rewards, a prompt-conditioned gate over the heads, a linear path between the two RMs' weights, and
the helpful-harmless frontier of them all (`combine/frontier.csv`)."""
