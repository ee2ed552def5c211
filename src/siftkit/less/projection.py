"""Rademacher random projection without a stored dense matrix.

LESS projects per-sample gradients (P = millions of LoRA parameters) to ``dim`` (8192) dimensions with a
Rademacher matrix R (P x dim, entries +-1). R is never stored whole: entry (i, j) is a pure function of
``(seed, i * dim + j)`` (a counter-based 32-bit integer hash), so any block of rows can be generated on any
device, in any chunking, and comes out identical: the training pool and the target examples, computed in
different batches, processes or machines, see the same R. Integer arithmetic is exact, so CPU and CUDA agree.

``project(block, row_offset)`` multiplies a (B, p) block of gradient coordinates by rows
``row_offset .. row_offset + p`` of R; the full projection is the sum over the parameter blocks. Generated
blocks are kept in memory up to ``cache_bytes`` (small LoRA configurations then generate R once per run);
beyond that they are regenerated per call, ``chunk_entries`` at a time. No 1/sqrt(dim) scaling: LESS
L2-normalises the projected vectors.
"""

from __future__ import annotations

from typing import Any

_M32 = 0xFFFFFFFF
_MUL = 0x45D9F3B          # < 2^27: (x < 2^32) * _MUL stays below 2^63, so int64 never overflows


def _mix32(x: Any) -> Any:
    """A bijective 32-bit integer hash on non-negative int64 tensors (values < 2^32)."""
    x = ((x >> 16) ^ x) * _MUL & _M32
    x = ((x >> 16) ^ x) * _MUL & _M32
    return (x >> 16) ^ x


def _mix32_int(x: int) -> int:
    x = ((x >> 16) ^ x) * _MUL & _M32
    x = ((x >> 16) ^ x) * _MUL & _M32
    return (x >> 16) ^ x


def rademacher_rows(start: int, n_rows: int, dim: int, seed: int, device: Any = "cpu", dtype: Any = None) -> Any:
    """Rows ``start .. start + n_rows`` of the seeded P x dim Rademacher matrix, as a (n_rows, dim) tensor."""
    import torch

    s = _mix32_int((int(seed) * 0x9E3779B1 + 0x7F4A7C15) & _M32)
    rows = torch.arange(start, start + n_rows, dtype=torch.int64, device=device)
    idx = rows[:, None] * dim + torch.arange(dim, dtype=torch.int64, device=device)[None, :]
    h = _mix32((idx & _M32) ^ _mix32((idx >> 32) ^ s))
    return ((h & 1) * 2 - 1).to(dtype or torch.float32)


class RademacherProjector:
    def __init__(self, dim: int = 8192, seed: int = 0, *, device: Any = "cpu",
                 chunk_entries: int = 1 << 23, cache_bytes: int = 1 << 30):
        if int(dim) < 1:
            raise ValueError(f"projection dim must be >= 1, got {dim}")
        self.dim, self.seed, self.device = int(dim), int(seed), device
        self.chunk_rows = max(1, int(chunk_entries) // self.dim)
        self.cache_bytes = int(cache_bytes)
        self._cache: dict[tuple[int, int], Any] = {}
        self._cached_bytes = 0

    def _rows(self, start: int, n: int) -> Any:
        key = (start, n)
        r = self._cache.get(key)
        if r is None:
            r = rademacher_rows(start, n, self.dim, self.seed, self.device)
            size = n * self.dim * 4
            if self._cached_bytes + size <= self.cache_bytes:
                self._cache[key] = r
                self._cached_bytes += size
        return r

    def project(self, block: Any, row_offset: int) -> Any:
        """(B, p) float tensor -> (B, dim) float32: ``block @ R[row_offset : row_offset + p]``."""
        import torch

        b, p = block.shape
        out = torch.zeros((b, self.dim), dtype=torch.float32, device=block.device)
        x = block.float()
        for s in range(0, p, self.chunk_rows):
            n = min(self.chunk_rows, p - s)
            out += x[:, s:s + n] @ self._rows(row_offset + s, n)
        return out
