"""racluster's merged state and dir, from each group's set of values and packet counts.

state follows the TCP priority RST > FIN > CLO > TIM > CON > ACC > REQ when every member
is TCP; otherwise it is derived from the merged packet counts (CON both ways, INT when a
member was INT, REQ sent only, RSP received only), and the earliest record's state when
no packet was counted. dir is the members' dir when they agree, and members uncertain of
their direction give way to the others, so a TCP flow seen both ways stays ``->``.
Otherwise dir is derived from the merged spkts/dpkts. ARP's ``who`` and Argus's ``?``
are kept when every member has them.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from appliance.analyses.grouping import AGREE, UNSEEN
from appliance.analyses.merge import TCP, TCP_STATE_PRIORITY, Merger, _mask_members

#: Names the state choice indexes after the group's own value: the TCP priority states,
#: then CON, INT, REQ, RSP.
FIXED_STATES = [*TCP_STATE_PRIORITY, "CON", "INT", "REQ", "RSP"]

DIRECTIONS = ["who", "<?>", "<->", "?>", "->", "<?", "<-"]


def _distinct(masks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Return the distinct masks and, per group, the position of its mask among them."""
    encoded = pc.dictionary_encode(pa.array(masks))
    return (encoded.dictionary.to_numpy(zero_copy_only=False),
            encoded.indices.to_numpy(zero_copy_only=False))


def _state_facts(members: list[str]) -> tuple[int, bool]:
    """For one group's distinct states: the top TCP priority (0 for none), and whether one
    of them is INT."""
    ranks = [TCP_STATE_PRIORITY.index(text) + 1 for text in members if text in TCP_STATE_PRIORITY]
    return max(ranks, default=0), "INT" in members


def _group_state_facts(merger: Merger) -> tuple[list[str], np.ndarray, np.ndarray, np.ndarray]:
    """Per group: the single state (index into the returned names, -1 if several or none),
    the top TCP rank, and whether any member is INT."""
    groups = merger.groups
    masked = merger.masks("state")
    if masked is None:
        rows = groups.by_rows("state")
        names = sorted({text for row in rows for text in row})
        single = np.array([names.index(row[0]) if len(set(row)) == 1 else -1 for row in rows],
                          dtype=np.int64)
        facts = [_state_facts(sorted(set(row))) for row in rows]
    else:
        masks, names = masked
        distinct, inverse = _distinct(masks)
        per_mask = []
        for mask in distinct.tolist():
            members = _mask_members(mask, names)
            position = names.index(members[0]) if len(members) == 1 else -1
            per_mask.append((position, *_state_facts(members)))
        # Small integers (positions below MASK_BITS, ranks up to 7) keep the per-group copy small.
        table = np.array(per_mask, dtype=np.int16).reshape(-1, 3)[inverse]
        return names, table[:, 0], table[:, 1], table[:, 2].astype(bool)
    top = np.array([fact[0] for fact in facts], dtype=np.int64)
    any_int = np.array([fact[1] for fact in facts], dtype=bool)
    return names, single, top, any_int


def _all_tcp(merger: Merger) -> np.ndarray:
    """Per group: whether every member with a proto is TCP (True when none has one)."""
    first, agreement = merger.agreement("proto")
    return (agreement == UNSEEN) | ((agreement == AGREE) & (first == TCP))


def merged_state(merger: Merger) -> pa.Array:
    """Return each group's merged state (see the module's description)."""
    names, single, top_rank, any_int = _group_state_facts(merger)
    spkts, dpkts = merger.sums["spkts"], merger.sums["dpkts"]
    sent, received = spkts > 0, dpkts > 0
    offset = len(names)
    choice = np.select(
        [single >= 0, _all_tcp(merger) & (top_rank > 0), sent & received,
         sent & any_int, sent, received],
        [single, offset + top_rank - 1, offset + 7, offset + 8, offset + 9, offset + 10],
        default=-1)
    merged = pa.array(names + FIXED_STATES, pa.string()).take(
        pa.array(np.where(choice < 0, 0, choice)))
    if (choice < 0).any():
        groups = merger.groups
        earliest = groups.take("state", groups.earliest)
        merged = pc.if_else(pa.array(choice < 0), earliest, merged)
    return merged


def _agreed(members: list[str]) -> int:
    """Return the position in DIRECTIONS of the dir the members agree on, else -1.

    Members whose direction is uncertain (``?``) give way to the others: a TCP record
    seen from its start (``->``) and one seen mid-stream (``<?>``) merge to ``->``.
    """
    certain = {text for text in members if "?" not in text}
    agreed = certain if certain else set(members)
    if len(agreed) == 1 and next(iter(agreed)) in DIRECTIONS:
        return DIRECTIONS.index(next(iter(agreed)))
    return -1


def merged_dir(merger: Merger) -> pa.Array:
    """Return dir from the merged packet counts, keeping ``who`` and ``?`` as described."""
    groups = merger.groups
    masked = merger.masks("dir")
    if masked is None:
        rows = groups.by_rows("dir")
        all_unsure = np.array([all("?" in text for text in row) for row in rows], dtype=bool)
        all_who = np.array([all(text == "who" for text in row) for row in rows], dtype=bool)
        single = np.array([_agreed(sorted(set(row))) for row in rows], dtype=np.int64)
    else:
        masks, texts = masked
        distinct, inverse = _distinct(masks)
        facts = []
        for mask in distinct.tolist():
            members = _mask_members(mask, texts)
            facts.append((all("?" in text for text in members),
                          all(text == "who" for text in members),
                          _agreed(members)))
        table = np.array(facts, dtype=np.int8).reshape(-1, 3)[inverse]
        all_unsure, all_who = table[:, 0].astype(bool), table[:, 1].astype(bool)
        single = table[:, 2]
    spkts, dpkts = merger.sums["spkts"], merger.sums["dpkts"]
    both = (spkts > 0) & (dpkts > 0)
    source = spkts > 0
    choices = np.select(
        [single >= 0, all_who, both & all_unsure, both, source & all_unsure, source,
         all_unsure],
        [single, 0, 1, 2, 3, 4, 5], default=6)
    return pa.array(DIRECTIONS).take(pa.array(choices))
