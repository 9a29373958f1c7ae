"""The policy (shared core): the causal LM that best-of-n and RL optimise, its prompts, and its decoders.

`sampling` opens the policy and samples from it, `decode` holds the batched decoders (prefill, KV
caches, the sampling loop), `llama_step` the fused Llama decode step on prepacked weights, and
`prompts` picks held-out prompts."""
