"""Random draws of one training step, one generator per sample seeded by (seed, step, sample
key): a sample gets the same prompt dropout, latent noise and timestep whichever rank or
micro-batch carries it, so 2 processes equal 1 process with twice the accumulation, and a
resumed run draws what the uninterrupted run drew."""

from __future__ import annotations

import hashlib


def sample_seed(seed: int, step: int, key: str, repeat: int = 0) -> int:
    """A 63-bit seed for one sample of one optimiser step (``repeat`` tells duplicates apart)."""
    text = f"{seed}\0{step}\0{key}\0{repeat}".encode()
    return int.from_bytes(hashlib.blake2b(text, digest_size=8).digest(), "little") >> 1


class Draws:
    """Per-sample generators of one batch; each call draws one value (or tensor) per sample,
    in sample order, on the CPU (identical on every device), then moves to ``device``."""

    def __init__(self, seed: int, step: int, keys: list[str]) -> None:
        import torch

        seen: dict[str, int] = {}
        self.generators = []
        for key in keys:
            seen[key] = seen.get(key, -1) + 1
            gen = torch.Generator().manual_seed(sample_seed(seed, step, key, seen[key]))
            self.generators.append(gen)

    def __len__(self) -> int:
        return len(self.generators)

    def randn(self, shape, device=None, dtype=None):
        """Standard normal, ``(n, *shape)``."""
        import torch

        out = torch.stack([torch.randn(tuple(shape), generator=g) for g in self.generators])
        return out.to(device=device, dtype=dtype)

    def randn_like(self, tensor):
        """Standard normal shaped, placed and typed like ``tensor`` (first dim = samples)."""
        return self.randn(tensor.shape[1:], tensor.device, tensor.dtype)

    def rand(self, device=None):
        """Uniform in [0, 1), one per sample."""
        import torch

        out = torch.cat([torch.rand(1, generator=g, dtype=torch.float64) for g in self.generators])
        return out.to(device=device)

    def randperm(self, sizes: list[int]) -> list[list[int]]:
        """A random permutation of ``range(sizes[i])`` for each sample i."""
        import torch

        return [torch.randperm(n, generator=g).tolist() for n, g in zip(sizes, self.generators,
                                                                         strict=True)]  # fmt: skip
