"""Blocks shared between model families (S4D, attention, FiLM, SincConv, residual conv) land here as families need them."""
