"""Hand-written kernels for what MindSpore's CPU backend lacks, each with a plain-MindSpore fallback."""
