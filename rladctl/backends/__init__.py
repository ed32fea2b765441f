"""Sampling and scoring backends (hf, vllm) behind the Generator and Scorer interfaces."""
