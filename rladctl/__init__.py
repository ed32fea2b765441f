"""rladctl: RL-aware knowledge distillation (RLAD, arXiv 2602.22495) as chained CLI stages."""

__version__ = "0.1.0"
