"""Blocks shared between model families (S4D, attention, FiLM, SincConv, residual conv).

Empty until a second family needs a block; then it moves here instead of being copied.
"""
