"""The prompts' shared prefixes as a tree of hash blocks, mapped onto the engine's KV-cache blocks.

A trace with prefix structure (:attr:`workbench.traces.trace.Trace.prefix_hashes`) gives, per request,
the hashes of its prompt's consecutive blocks of ``B = prefix_block_tokens`` tokens (512 for Mooncake).
Two requests share the first ``k`` blocks when their hash lists start with the same ``k`` values, so the
*chains* of hashes form a prefix tree: a node is one chain ``(h_0, ..., h_j)`` (keyed by its parent node
and ``h_j``, so equal hash values under different parents are different nodes), and each request's
prompt is a path from the root.

Mapping onto the engine's blocks of ``b = block_size`` tokens (``B`` and ``b`` may differ): an engine
block is identified, as in vLLM's prefix caching (chained hashes of all tokens up to and including the
block, ``vllm/v1/core/kv_cache_utils.py::hash_block_tokens``), by everything up to its last token, so it
belongs to the node of depth ``j`` whose tokens ``[j B, j B + c_j)`` hold its last token (``c_j`` the
node's tokens: ``B``, or less for the prompt's last, partial block) and it must be full: node ``j`` owns
engine blocks ``floor(j B / b)`` to ``floor((j B + c_j) / b) - 1`` (none if that range is empty).  An
engine block straddling two hash blocks belongs to the later one: two prompts that share hash block
``j`` but not ``j + 1`` do not share it (the trace says nothing about how many tokens of block ``j + 1``
they have in common, so none are assumed).  Tokens of a request beyond its last node (the partial engine
block at the end of the prompt, a prompt longer than its hashes, and every generated token) are its own:
its *private* blocks start at ``path_blocks`` (the engine block where its path ends).

Requests passing through one node must cover it with the same number of tokens (a hash of a full block
cannot also be the hash of a partial one); a trace that breaks this is refused with the requests named.

The engine keeps its cache bookkeeping per node (registered blocks, users), never per token; see rule 13
of :mod:`workbench.sim.continuous_engine`.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class PrefixTree:
    """Engine-ready arrays: request ``r``'s path is ``path_node[path_off[r]:path_off[r + 1]]`` (root first);
    node ``n`` owns engine blocks ``node_first[n]`` to ``node_first[n] + node_blocks[n] - 1``; request ``r``'s
    private blocks start at ``path_blocks[r]``."""

    path_off: np.ndarray      # int64, n + 1
    path_node: np.ndarray     # int32
    node_first: np.ndarray    # int32
    node_blocks: np.ndarray   # int32
    path_blocks: np.ndarray   # int32, per request
    block_size: int

    @property
    def num_nodes(self) -> int:
        return int(self.node_first.size)


_CACHE: OrderedDict[tuple, PrefixTree] = OrderedDict()
_CACHE_SIZE = 8


def empty_tree(num_requests: int, block_size: int) -> PrefixTree:
    """No shared prefixes: every block of every request is its own."""
    return PrefixTree(np.zeros(num_requests + 1, np.int64), np.zeros(0, np.int32), np.zeros(0, np.int32),
                      np.zeros(0, np.int32), np.zeros(num_requests, np.int32), int(block_size))


def prefix_tree(trace, block_size: int) -> PrefixTree:
    """The prefix tree of ``trace``'s hashes on engine blocks of ``block_size`` tokens (cached per trace
    fingerprint and block size; an empty tree for a trace without ``prefix_hashes``)."""
    hashes = getattr(trace, "prefix_hashes", None)
    if hashes is None:
        return empty_tree(len(trace.prompt_tokens), block_size)
    key = (trace.fingerprint, int(block_size))
    if key in _CACHE:
        _CACHE.move_to_end(key)
        return _CACHE[key]
    tree = build_tree(hashes.offsets, hashes.ids, int(trace.prefix_block_tokens),
                      np.asarray(trace.prompt_tokens), int(block_size))
    _CACHE[key] = tree
    if len(_CACHE) > _CACHE_SIZE:
        _CACHE.popitem(last=False)
    return tree


def build_tree(offsets: np.ndarray, ids: np.ndarray, block_tokens: int, prompt_tokens: np.ndarray,
               block_size: int) -> PrefixTree:
    """Build the tree (see the module docstring); vectorised depth by depth (one ``np.unique`` per depth)."""
    n = prompt_tokens.size
    counts = np.diff(offsets)
    total = int(offsets[-1])
    if total == 0:
        return empty_tree(n, block_size)
    request = np.repeat(np.arange(n, dtype=np.int64), counts)
    depth = np.arange(total, dtype=np.int64) - np.repeat(offsets[:-1], counts)
    node = np.empty(total, np.int64)
    by_depth = np.argsort(depth, kind="stable")
    bounds = np.searchsorted(depth[by_depth], np.arange(int(counts.max()) + 1))
    n_nodes = 0
    for j in range(bounds.size - 1):
        entries = by_depth[bounds[j]:bounds[j + 1]]
        parent = node[entries - 1] if j > 0 else np.full(entries.size, -1, np.int64)
        keys = np.stack([parent, ids[entries]], axis=1)
        unique, inverse = np.unique(keys, axis=0, return_inverse=True)
        node[entries] = n_nodes + inverse.ravel()
        n_nodes += unique.shape[0]
    covered = np.minimum(block_tokens, prompt_tokens.astype(np.int64)[request] - block_tokens * depth)
    low = np.full(n_nodes, np.iinfo(np.int64).max)
    high = np.full(n_nodes, -1, np.int64)
    np.minimum.at(low, node, covered)
    np.maximum.at(high, node, covered)
    bad = np.flatnonzero(low[node] != high[node])
    if bad.size:
        e = int(bad[0])
        other = int(np.flatnonzero((node == node[e]) & (covered != covered[e]))[0])
        raise ValueError(
            f"prefix_hashes: requests {int(request[e])} and {int(request[other])} share the hash chain up to block "
            f"{int(depth[e])} but their prompts give that block {int(covered[e])} and {int(covered[other])} tokens; "
            "a block's hash must identify its tokens (a partial last block needs its own hash)")
    node_depth = np.empty(n_nodes, np.int64)
    node_depth[node] = depth
    start = block_tokens * node_depth
    first = start // block_size
    blocks = np.maximum((start + low) // block_size - first, 0)
    last = offsets[1:] - 1
    path_blocks = np.zeros(n, np.int64)
    has = counts > 0
    path_blocks[has] = first[node[last[has]]] + blocks[node[last[has]]]
    if first.max() + blocks.max() >= np.iinfo(np.int32).max:
        raise ValueError("prefix_hashes: prompts too long for 32-bit block indices")
    return PrefixTree(offsets.astype(np.int64), node.astype(np.int32), first.astype(np.int32),
                      blocks.astype(np.int32), path_blocks.astype(np.int32), int(block_size))


__all__ = ["PrefixTree", "build_tree", "empty_tree", "prefix_tree"]
