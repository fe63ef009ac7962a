"""Open-addressing hash index from 48-byte flow keys (six 64-bit words) to flow slots.

``index`` (int32) has a power-of-two number of buckets holding a slot number or -1;
collisions probe linearly and deletion shifts later entries back, so no
tombstones build up. ``keys`` and ``hashes`` are per slot. ``hashes`` keeps the low
32 bits of each key's hash, which pick the bucket (an index never has 2**32
buckets) and rule out most unequal keys before their words are compared.
"""

from __future__ import annotations

import numpy as np

from appliance.flows.layout import M_ACTIVE, M_FREE_TOP, M_HIGH_WATER
from appliance.jit import njit

KEY_WORDS = 6
MULTIPLIER = np.uint64(0x9E3779B97F4A7C15)
SHIFT = np.uint64(29)
LOW_BITS = np.uint64(0xFFFFFFFF)


@njit(cache=True, inline="always")
def hash_key(keys, row):
    """Return a 64-bit hash of one six-word key."""
    h = np.uint64(0)
    for k in range(KEY_WORDS):
        h = (h ^ keys[row, k]) * MULTIPLIER
        h ^= h >> SHIFT
    return h


@njit(cache=True, inline="always")
def same_key(slot_keys, slot, keys, row):
    for k in range(KEY_WORDS):
        if slot_keys[slot, k] != keys[row, k]:
            return False
    return True


@njit(cache=True, inline="always")
def find(index, hashes, slot_keys, keys, row, h):
    """Return (slot, bucket): the key's slot or -1, and the bucket probing stopped at."""
    mask = len(index) - 1
    bucket = np.int64(h & np.uint64(mask))
    while True:
        slot = index[bucket]
        if slot < 0:
            return -1, bucket
        if hashes[slot] == (h & LOW_BITS) and same_key(slot_keys, slot, keys, row):
            return slot, bucket
        bucket = (bucket + 1) & mask


@njit(cache=True)
def insert(index, hashes, slot_keys, free, meta, keys, row, h, bucket):
    """Take a free slot for the key at ``keys[row]`` (absent, probing ended at ``bucket``)."""
    if meta[M_FREE_TOP] > 0:
        meta[M_FREE_TOP] -= 1
        slot = free[meta[M_FREE_TOP]]
    else:
        slot = meta[M_HIGH_WATER]
        meta[M_HIGH_WATER] += 1
    for k in range(KEY_WORDS):
        slot_keys[slot, k] = keys[row, k]
    hashes[slot] = h & LOW_BITS
    index[bucket] = slot
    meta[M_ACTIVE] += 1
    return slot


@njit(cache=True)
def remove(index, hashes, free, meta, slot):
    """Drop a slot from the index and put it on the free stack."""
    unlink(index, hashes, slot)
    free[meta[M_FREE_TOP]] = slot
    meta[M_FREE_TOP] += 1
    meta[M_ACTIVE] -= 1


@njit(cache=True)
def unlink(index, hashes, slot):
    """Drop a slot from the index, keeping the slot itself."""
    mask = len(index) - 1
    bucket = np.int64(hashes[slot] & np.uint64(mask))
    while index[bucket] != slot:
        bucket = (bucket + 1) & mask
    hole = bucket
    probe = bucket
    while True:
        probe = (probe + 1) & mask
        moved = index[probe]
        if moved < 0:
            break
        home = np.int64(hashes[moved] & np.uint64(mask))
        # Leave an entry whose home lies cyclically in (hole, probe]: the hole does not cut
        # its probe chain.
        if hole <= probe:
            stays = hole < home <= probe
        else:
            stays = home > hole or home <= probe
        if not stays:
            index[hole] = moved
            hole = probe
    index[hole] = -1


@njit(cache=True)
def rebuild(index, hashes, in_use):
    """Fill an empty (all -1) index with every slot in use."""
    mask = len(index) - 1
    for slot in range(len(in_use)):
        if in_use[slot]:
            bucket = np.int64(hashes[slot] & np.uint64(mask))
            while index[bucket] >= 0:
                bucket = (bucket + 1) & mask
            index[bucket] = slot
