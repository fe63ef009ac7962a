"""User data (-U) in a shared pool of fixed-size chunks, chained per flow direction.

A flow direction takes no chunk until its first payload byte and then as many as
its captured bytes fill, so the table's memory follows the payload that flows carry,
not the -U limit times the slots. ``chunks`` (capacity x CHUNK_LEN bytes) contains the
data and ``chunk_next`` the chain: the next chunk of the same direction, or -1. Free
chunks form one chain from ``meta[M_CHUNK_FREE]``; chunks at or above
``meta[M_CHUNK_HIGH]`` have never been used. The compiled packet loop stops before a
packet whose payload might not fit, and the table grows the pool.
"""

from __future__ import annotations

import numpy as np

from appliance.flows.layout import M_CHUNK_FREE, M_CHUNK_HIGH, M_CHUNKS_FREE
from appliance.jit import njit

#: Bytes per chunk: a 128-byte -U fills four, an 18-byte DNS query one.
CHUNK_LEN = 32


def chunk_len(user_data_len: int) -> int:
    """Return the chunk size for a -U limit: a power of two, at most CHUNK_LEN."""
    return min(CHUNK_LEN, 1 << max(0, user_data_len - 1).bit_length())


@njit(cache=True, inline="always")
def chunks_free(meta, capacity):
    """Return how many chunks can still be taken without growing the pool."""
    return capacity - meta[M_CHUNK_HIGH] + meta[M_CHUNKS_FREE]


@njit(cache=True)
def take_chunk(chunk_next, meta):
    """Take a chunk off the free chain, or the first never-used one.

    The caller has checked that the pool has room.
    """
    chunk = meta[M_CHUNK_FREE]
    if chunk >= 0:
        meta[M_CHUNK_FREE] = chunk_next[chunk]
        meta[M_CHUNKS_FREE] -= 1
    else:
        chunk = meta[M_CHUNK_HIGH]
        meta[M_CHUNK_HIGH] += 1
    chunk_next[chunk] = -1
    return chunk


@njit(cache=True)
def append(sides, slot, side, chunks, chunk_next, meta, buffer, offset, take):
    """Append ``take`` bytes of ``buffer`` from ``offset`` to one direction's user data."""
    size = chunks.shape[1]
    record = sides[slot, side]
    position = np.int64(record.user_len)
    end = position + take
    source = offset
    tail = record.user_tail
    while position < end:
        within = position & (size - 1)  # size is a power of two
        if within == 0:
            chunk = take_chunk(chunk_next, meta)
            if position == 0:
                record.user_head = chunk
            else:
                chunk_next[tail] = chunk
            tail = chunk
        count = min(size - within, end - position)
        for k in range(count):
            chunks[tail, within + k] = buffer[source + k]
        position += count
        source += count
    record.user_tail = tail
    record.user_len = end


@njit(cache=True)
def release(sides, slot, side, chunk_next, meta, size):
    """Give one direction's chunks back to the free chain and empty its user data."""
    length = sides[slot, side].user_len
    if length > 0:
        chunk_next[sides[slot, side].user_tail] = meta[M_CHUNK_FREE]
        meta[M_CHUNK_FREE] = sides[slot, side].user_head
        meta[M_CHUNKS_FREE] += (length + size - 1) // size
    sides[slot, side].user_len = 0
    sides[slot, side].user_head = -1
    sides[slot, side].user_tail = -1


@njit(cache=True)
def copy_out(sides, slot, side, chunks, chunk_next, target, row):
    """Copy one direction's user data into ``target[row, side]``; return its length."""
    size = chunks.shape[1]
    length = sides[slot, side].user_len
    chunk = sides[slot, side].user_head
    done = 0
    while done < length:
        count = min(size, length - done)
        for k in range(count):
            target[row, side, done + k] = chunks[chunk, k]
        done += count
        chunk = chunk_next[chunk]
    return length
