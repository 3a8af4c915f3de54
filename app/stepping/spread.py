"""Spread checkpoints: each step rewrites a share of the session's chunks, oldest first.

A whole checkpoint rewrites θ and the state in one step (Adam: three times the parameters'
bytes), so one step in `checkpoint_every` pays it all. A spread checkpoint cuts that cost into
*pieces* — chunk c of a tensor's θ together with chunk c of each of its slots of θ's shape (and,
with chunk 0, the tensor's 0-d slots: its `step` count, …) — and each step rewrites the oldest
pieces, about 1/`checkpoint_every` of the bytes, recording the version it wrote them at
(`ArrayStore.save_chunks`). The step log keeps every logged step some piece was written before,
and replay applies each to those pieces only (`app.stepping.replay`), which is exact where the
rule is piecewise (`Optimizer.piecewise`: the same arithmetic on a slice as on the whole).

Chunks are cut by bytes (`DatabaseArrays.chunk_bytes`); a tensor's θ and slots of θ's shape
share a dtype, so chunk c of each covers the same elements when the chunk size is a multiple of
the itemsize.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
from optaas_state import GLOBAL_PREFIX, PARAM_SLOT, is_accumulation_key, split_key


@dataclass(frozen=True)
class Piece:
    """Chunk `chunk` of tensor `tensor`'s θ and slots of θ's shape (`cut`), and with chunk 0
    its 0-d slots (`whole`): what one spread checkpoint writes together."""

    tensor: str
    chunk: int
    cut: tuple[str, ...]
    whole: tuple[str, ...]
    nbytes: int


def chunk_count(nbytes: int, chunk_bytes: int) -> int:
    """How many chunks the store cuts an array of `nbytes` into (one, if empty)."""
    return max(1, -(-nbytes // chunk_bytes))


def pieces_of(arrays: Mapping[str, np.ndarray], chunk_bytes: int) -> list[Piece] | None:
    """The session's pieces, tensor by tensor in the arrays' order, or None if its arrays do
    not cut into pieces: a slot neither of θ's shape nor 0-d (Adafactor's factors), a slot of
    another itemsize than θ's, or a chunk size that splits an element."""
    tensors: dict[str, list[str]] = {}
    for key in arrays:
        if key.startswith(GLOBAL_PREFIX) or is_accumulation_key(key):
            continue
        tensors.setdefault(split_key(key)[1], []).append(key)
    pieces = []
    for tensor, keys in tensors.items():
        param = arrays.get(f"{PARAM_SLOT}/{tensor}")
        if param is None or chunk_bytes % param.itemsize:
            return None
        cut = tuple(key for key in keys if arrays[key].ndim)
        whole = tuple(key for key in keys if not arrays[key].ndim)
        if any(arrays[key].shape != param.shape or arrays[key].dtype != param.dtype for key in cut):
            return None
        scalar_bytes = sum(arrays[key].nbytes for key in whole)
        for chunk in range(chunk_count(param.nbytes, chunk_bytes)):
            size = min(chunk_bytes, param.nbytes - chunk * chunk_bytes) * len(cut)
            first = chunk == 0
            nbytes = size + (scalar_bytes if first else 0)
            pieces.append(Piece(tensor, chunk, cut, whole if first else (), nbytes))
    return pieces


def written_at(piece: Piece, chunks: Mapping[str, list[int]]) -> int:
    """The version the piece was last written at (0: by a whole checkpoint)."""
    return chunks[piece.cut[0] if piece.cut else piece.whole[0]][piece.chunk]


def due(pieces: list[Piece], chunks: Mapping[str, list[int]], share: int) -> list[Piece]:
    """The pieces to write now: the oldest first (in session order among equals), while they
    hold fewer than `share` bytes (none if `share` ≤ 0). The caller carries what they wrote
    beyond or short of its share to the next step (`WorkingSet.spread_credit`), so that the
    steps write 1/`checkpoint_every` of the bytes on average even with pieces larger than that,
    and every piece within about `checkpoint_every` steps."""
    ordered = sorted(
        range(len(pieces)), key=lambda index: (written_at(pieces[index], chunks), index)
    )
    chosen, nbytes = [], 0
    for index in ordered:
        if nbytes >= share:
            break
        chosen.append(pieces[index])
        nbytes += pieces[index].nbytes
    return chosen


def oldest(pieces: list[Piece], chunks: Mapping[str, list[int]]) -> int:
    """The oldest version any piece was written at: logged steps up to it replay onto none."""
    return min(written_at(piece, chunks) for piece in pieces)
