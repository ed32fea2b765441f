"""Models and tokenizers: hub access, the local model factory, safe loading, identity hashes."""
