"""Agent backends: the deterministic offline policy (LLM backends come in their own modules)."""
