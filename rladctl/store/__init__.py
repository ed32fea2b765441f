"""Artifacts and checkpoints on disk: the Parquet contract, its schema, atomic files."""
