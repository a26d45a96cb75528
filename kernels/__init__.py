"""Triton kernels, installed as d2c_fast.kernels; populated by the GPU issues."""
