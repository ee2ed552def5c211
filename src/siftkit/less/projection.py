"""Rademacher random projection without a stored dense matrix.

LESS projects per-sample gradients (P = millions of LoRA parameters) to ``dim`` (8192) dimensions with a
Rademacher matrix R (P x dim, entries +-1). R is never materialised whole. It is defined block by block: rows
``k*BLOCK_ROWS .. (k+1)*BLOCK_ROWS`` are the raw output of numpy's PCG64 generator seeded with ``(seed, k)``,
one bit per entry (bit ``j % 8`` of byte ``j // 8`` of a row, 1 -> +1, 0 -> -1). PCG64's raw stream is
stable across numpy versions and platforms, so any block can be regenerated anywhere and comes out identical:
the training pool and the target examples, computed in different batches, processes or machines (CPU or
GPU: bits are generated on the CPU and expanded on the device), see the same R.

``project(x, row_offset)`` multiplies a (B, p) block of gradient coordinates by rows
``row_offset .. row_offset + p`` of R; a full projection may be the sum over parameter blocks. Packed blocks
(1 bit per entry) are kept in memory up to ``cache_bytes`` (2 GiB: R for P x dim <= 17G entries, e.g. LoRA
r=8 on SmolLM2-135M at dim 8192, is generated once per run); beyond that they are regenerated per call.
No 1/sqrt(dim) scaling: LESS L2-normalises the projected vectors.

Two random streams (``kind``), each identical on every device, giving different matrices (so the kind is
part of a feature's fingerprint):

- ``pcg64`` (default): the PCG64 bit blocks above. Fast on a CPU (~0.5G entries/s here with the lookup); on a
  GPU the bits still come from the CPU (~50G entries/s of PCG64 output, then 1 bit per entry over PCIe).
- ``hash``: entry (i, j) is a counter-based 32-bit integer hash of ``(seed, i * dim + j)`` computed with int64
  tensor arithmetic on the device itself (exact, so CPU and CUDA agree). Slow on a CPU (~9M entries/s here),
  but it needs no host-side generation or transfer, which is what a GPU wants for large LoRA configurations
  (LoRA r 128 on a 7B model is ~134M parameters, i.e. ~1.1T entries per projection buffer at dim 8192).
"""

from __future__ import annotations

from typing import Any

import numpy as np

BLOCK_ROWS = 256


def packed_block(k: int, dim: int, seed: int) -> np.ndarray:
    """Block ``k`` of R as packed bits: (BLOCK_ROWS, ceil(dim / 8)) uint8."""
    nbytes = -(-dim // 8)
    words = -(-BLOCK_ROWS * nbytes // 8)
    raw = np.random.PCG64([int(seed), int(k)]).random_raw(words).astype("<u8", copy=False)
    return raw.view(np.uint8)[:BLOCK_ROWS * nbytes].reshape(BLOCK_ROWS, nbytes)


def unpack_signs(packed: Any, dim: int, dtype: Any = None) -> Any:
    """(rows, ceil(dim/8)) uint8 tensor -> (rows, dim) tensor of +-1 (bit j % 8 of byte j // 8)."""
    import torch

    key = (str(packed.device), dtype)
    table = _TABLES.get(key)
    if table is None:       # byte value -> its 8 signs; a lookup is ~3x faster than shifting bits on a CPU
        bits = (torch.arange(256, device=packed.device)[:, None] >> torch.arange(8, device=packed.device)) & 1
        table = _TABLES[key] = (bits * 2 - 1).to(dtype or torch.float32)
    return torch.nn.functional.embedding(packed.int(), table).reshape(packed.shape[0], -1)[:, :dim]


_TABLES: dict[tuple[str, Any], Any] = {}

KINDS = ("pcg64", "hash")
_M32 = 0xFFFFFFFF
_MUL = 0x45D9F3B          # < 2^27: (x < 2^32) * _MUL stays below 2^63, so int64 never overflows


def _mix32(x: Any) -> Any:
    """A bijective 32-bit integer hash of non-negative int64 values < 2^32 (tensors or ints)."""
    x = ((x >> 16) ^ x) * _MUL & _M32
    x = ((x >> 16) ^ x) * _MUL & _M32
    return (x >> 16) ^ x


def hash_rows(start: int, n_rows: int, dim: int, seed: int, device: Any = "cpu", dtype: Any = None) -> Any:
    """Rows ``start .. start + n_rows`` of the ``hash`` kind's matrix, generated on ``device``."""
    import torch

    s = _mix32((int(seed) * 0x9E3779B1 + 0x7F4A7C15) & _M32)
    rows = torch.arange(start, start + n_rows, dtype=torch.int64, device=device)
    idx = rows[:, None] * dim + torch.arange(dim, dtype=torch.int64, device=device)[None, :]
    h = _mix32((idx & _M32) ^ _mix32((idx >> 32) ^ s))
    return ((h & 1) * 2 - 1).to(dtype or torch.float32)


def rademacher_rows(start: int, n_rows: int, dim: int, seed: int, device: Any = "cpu", dtype: Any = None,
                    kind: str = "pcg64") -> Any:
    """Rows ``start .. start + n_rows`` of the seeded P x dim Rademacher matrix, as a (n_rows, dim) tensor."""
    import torch

    if kind == "hash":
        return hash_rows(start, n_rows, dim, seed, device, dtype)

    first, last = start // BLOCK_ROWS, (start + n_rows - 1) // BLOCK_ROWS
    blocks = np.concatenate([packed_block(k, dim, seed) for k in range(first, last + 1)]) if n_rows > 0 else \
        np.zeros((0, -(-dim // 8)), dtype=np.uint8)
    lo = start - first * BLOCK_ROWS
    packed = torch.from_numpy(np.ascontiguousarray(blocks[lo:lo + n_rows])).to(device)
    return unpack_signs(packed, dim, dtype)


class RademacherProjector:
    def __init__(self, dim: int = 8192, seed: int = 0, *, device: Any = "cpu", cache_bytes: int = 2 << 30,
                 chunk_entries: int = 1 << 25, kind: str = "pcg64"):
        if int(dim) < 1:
            raise ValueError(f"projection dim must be >= 1, got {dim}")
        if kind not in KINDS:
            raise ValueError(f"projection kind must be one of {', '.join(KINDS)}, got {kind!r}")
        self.kind = kind
        self.dim, self.seed, self.device = int(dim), int(seed), device
        self.cache_bytes, self.chunk_entries = int(cache_bytes), int(chunk_entries)
        self._cache: dict[int, Any] = {}
        self._cached_bytes = 0

    def _packed(self, k: int) -> Any:
        import torch

        t = self._cache.get(k)
        if t is None:
            t = torch.from_numpy(packed_block(k, self.dim, self.seed)).to(self.device)
            size = t.numel()
            if self._cached_bytes + size <= self.cache_bytes:
                self._cache[k] = t
                self._cached_bytes += size
        return t

    def project(self, x: Any, row_offset: int = 0) -> Any:
        """(B, p) float tensor -> (B, dim) float32: ``x @ R[row_offset : row_offset + p]``.

        Blocks are expanded ``chunk_entries`` at a time (one lookup and one matrix product per chunk)."""
        import torch

        b, p = x.shape
        out = torch.zeros((b, self.dim), dtype=torch.float32, device=x.device)
        x = x.float()
        if self.kind == "hash":                     # generated on the device, chunk by chunk, never cached
            step = max(1, self.chunk_entries // self.dim)
            for s in range(0, p, step):
                n = min(step, p - s)
                out += x[:, s:s + n] @ hash_rows(row_offset + s, n, self.dim, self.seed, x.device)
            return out
        per_chunk = max(1, self.chunk_entries // (BLOCK_ROWS * self.dim))    # blocks per chunk
        first, last = row_offset // BLOCK_ROWS, (row_offset + p - 1) // BLOCK_ROWS
        for k0 in range(first, last + 1, per_chunk):
            ks = range(k0, min(k0 + per_chunk, last + 1))
            packed = torch.cat([self._packed(k) for k in ks]) if len(ks) > 1 else self._packed(k0)
            lo = max(row_offset, k0 * BLOCK_ROWS)                  # global rows covered by this chunk
            hi = min(row_offset + p, (ks[-1] + 1) * BLOCK_ROWS)
            r = unpack_signs(packed[lo - k0 * BLOCK_ROWS: hi - k0 * BLOCK_ROWS], self.dim)
            out += x[:, lo - row_offset: hi - row_offset] @ r
        return out
