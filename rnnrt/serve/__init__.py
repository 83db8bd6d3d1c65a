"""Serving: Triton model repositories for step graphs."""
