"""Prompt sources and their verifiers (reasoning-gym tasks, local files, math-verify)."""
