"""Text segments of a conversation, computed for a whole batch at once.

Every signal states which segment it reads (see METHODS.md, notation):

- ``query``: everything before the last assistant turn (system + earlier turns + last user turn);
- ``response``: the last assistant turn;
- ``conversation``: all turns;
- ``turns``: each turn separately (per-turn signals aggregate themselves).

Tool use: a turn's text is its content, plus, for an assistant turn with tool calls, one compact
``name(arguments)`` line per call (``formats.turn_text``), so lengths, hashes, embeddings and model scores
count the calls. Tool-call turns are assistant turns and tool-result turns (role ``tool``) are ordinary turns:
both belong to the query when they come before the last assistant turn, and a conversation that ends on a
tool call has that call as its response. Preference and KTO records are read on ``messages`` (prompt +
chosen answer / completion); the ``rejected`` answer is not part of any segment.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

SEGMENTS = ("query", "response", "conversation")


@dataclass
class FlatBatch:
    role_array: pa.Array      # all turns of the batch, flattened (Arrow)
    content_array: pa.Array
    offsets: np.ndarray       # int64, len n+1: turns of record i are offsets[i]:offsets[i+1]
    last_assistant: np.ndarray  # int64, flat index of each record's last assistant turn (-1 if none)
    _roles: list[str] | None = None
    _contents: list[str] | None = None

    @property
    def roles(self) -> list[str]:
        if self._roles is None:
            self._roles = self.role_array.to_pylist()
        return self._roles

    @property
    def contents(self) -> list[str]:
        if self._contents is None:
            self._contents = self.content_array.to_pylist()
        return self._contents

    @property
    def n(self) -> int:
        return len(self.offsets) - 1

    def per_record_sum(self, per_turn: np.ndarray, segment: str) -> np.ndarray:
        """Aggregate a per-turn numeric array (e.g. token counts) into a per-record segment value."""
        per_turn = np.asarray(per_turn)
        csum = np.concatenate([[0], np.cumsum(per_turn, dtype=np.float64 if per_turn.dtype.kind == "f"
                                                else np.int64)])
        start, end, last = self.offsets[:-1], self.offsets[1:], self.last_assistant
        last_ok = np.where(last >= 0, last, start)
        if segment == "conversation":
            return csum[end] - csum[start]
        if segment == "response":
            return np.where(last >= 0, per_turn[np.maximum(last, 0)] if len(per_turn) else 0, 0)
        if segment == "query":
            return csum[last_ok] - csum[start]
        raise ValueError(f"unknown segment {segment!r}; expected one of {SEGMENTS}")

    def texts(self, segment: str, sep: str = "\n\n") -> list[str]:
        """Per-record text of a segment (turn contents joined with ``sep``)."""
        c, off, last = self.contents, self.offsets, self.last_assistant
        if segment == "response":
            return [c[j] if j >= 0 else "" for j in last.tolist()]
        out = []
        starts = off[:-1].tolist()
        stops = (off[1:] if segment == "conversation" else np.where(last >= 0, last, off[:-1])).tolist()
        for s, e in zip(starts, stops):
            out.append(c[s] if e - s == 1 else sep.join(c[s:e]))
        return out


def flatten(batch: pa.Table) -> FlatBatch:
    msgs = batch.column("messages")
    if isinstance(msgs, pa.ChunkedArray):
        msgs = msgs.combine_chunks()
    offsets = msgs.offsets.to_numpy().astype(np.int64)
    offsets = offsets - offsets[0]
    values = msgs.flatten()
    roles_arr = values.field("role")
    content_arr = values.field("content")
    if values.type.get_field_index("tool_calls") >= 0:
        calls = values.field("tool_calls")
        if calls.null_count < len(calls):
            content_arr = _with_calls(content_arr, calls)
    is_asst = pc.equal(roles_arr, "assistant").to_numpy(zero_copy_only=False)
    pos = np.flatnonzero(is_asst)
    n = len(offsets) - 1
    last = np.full(n, -1, dtype=np.int64)
    if len(pos):
        rec = np.searchsorted(offsets, pos, side="right") - 1
        # positions are increasing, so the last occurrence of each record index is its last assistant turn
        rev_rec = rec[::-1]
        uniq, first_in_rev = np.unique(rev_rec, return_index=True)
        last[uniq] = pos[::-1][first_in_rev]
    return FlatBatch(roles_arr, content_arr, offsets, last)


def _with_calls(content: pa.Array, calls: pa.Array) -> pa.Array:
    """Contents with each tool-call turn's calls rendered after its text (see the module docstring)."""
    from ..io.formats import render_tool_calls

    out = content.to_pylist()
    for j in np.flatnonzero(calls.is_valid().to_numpy(zero_copy_only=False)).tolist():
        c = calls[j].as_py()
        if c:
            r = render_tool_calls(c)
            out[j] = f"{out[j]}\n{r}" if out[j] else r
    return pa.array(out, pa.string())
