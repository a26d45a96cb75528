"""The library's one randomness policy: a batch RNG.

Every call that draws takes ``seed=`` (image ``i`` gets its own generator seeded ``seed + i``,
so an image does not depend on the batch size or its position), ``generator=`` (one
``torch.Generator`` for the whole batch), explicit per-image seeds (sharded jobs, whose images
are not contiguous), or nothing (torch's global RNG). Slicing a batch RNG into chunks keeps
each image's generator, so chunked work draws what the whole batch would.
"""
from __future__ import annotations

from typing import Sequence

import torch


def seeded_generator(seed: int, device) -> torch.Generator:
    """A ``torch.Generator`` on ``device`` seeded with ``seed``."""
    g = torch.Generator(device=device)
    g.manual_seed(int(seed))
    return g


class BatchRNG:
    """Random draws for a batch of ``n`` images on ``device`` (see the module docstring)."""

    def __init__(self, n: int, device, generator: torch.Generator | None = None,
                 seed: int | None = None):
        if generator is not None and seed is not None:
            raise ValueError("give generator= or seed=, not both")
        self.n, self.device = n, torch.device(device)
        self.generator = generator
        self.generators: list[torch.Generator] | None = None
        if seed is not None:
            if not isinstance(seed, int):
                raise TypeError(f"seed must be an int, got {type(seed).__name__}")
            if not (-2 ** 63 <= seed and seed + n <= 2 ** 64):
                raise ValueError(f"seed must be a 64-bit integer (image i uses seed + i, so at "
                                 f"most 2**64 - {n} here), got {seed}")
            self.generators = [seeded_generator(seed + i, self.device) for i in range(n)]

    @classmethod
    def from_seeds(cls, seeds: Sequence[int], device) -> "BatchRNG":
        """Image ``i`` draws from a generator seeded ``seeds[i]``."""
        rng = cls(len(seeds), device)
        rng.generators = [seeded_generator(s, rng.device) for s in seeds]
        return rng

    @classmethod
    def from_generators(cls, generators: Sequence[torch.Generator], device) -> "BatchRNG":
        """Image ``i`` continues ``generators[i]`` (e.g. a sample's decode draws continue the
        generator its latent was drawn from)."""
        rng = cls(len(generators), device)
        rng.generators = list(generators)
        return rng

    def slice(self, a: int, b: int) -> "BatchRNG":
        """Images ``[a, b)``: per-image generators keep their identity; a shared generator or
        the global RNG is shared."""
        out = BatchRNG(b - a, self.device, self.generator)
        if self.generators is not None:
            out.generators = self.generators[a:b]
        return out

    def _draw(self, fn, shape, g):
        dev = g.device if g is not None else self.device
        return fn(shape, generator=g, device=dev).to(self.device)

    def randn(self, *shape) -> torch.Tensor:
        """Standard normal ``(n, *shape)`` float32."""
        if self.generators is not None:
            return torch.stack([self._draw(torch.randn, shape, g) for g in self.generators])
        return self._draw(torch.randn, (self.n, *shape), self.generator)

    def rand(self, *shape) -> torch.Tensor:
        """Uniform [0, 1) ``(n, *shape)`` float32."""
        if self.generators is not None:
            return torch.stack([self._draw(torch.rand, shape, g) for g in self.generators])
        return self._draw(torch.rand, (self.n, *shape), self.generator)


def chunks(n: int, batch_size: int | None):
    """``(a, b)`` ranges covering ``range(n)`` in pieces of at most ``batch_size`` (``None``:
    one piece)."""
    if batch_size is None or batch_size >= n:
        yield 0, n
        return
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    for s in range(0, n, batch_size):
        yield s, min(n, s + batch_size)
