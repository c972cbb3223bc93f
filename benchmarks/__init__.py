"""`python -m benchmarks`: how long a token takes with every view live, and whether the UI
stutters, measured against what a user would use instead (transformers' GPT-2)."""
