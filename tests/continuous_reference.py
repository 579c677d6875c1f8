"""An independent, slow reference of the continuous engine's rules (FCFS policy only).

Written from the rules in the docstring of :mod:`workbench.sim.continuous_engine`, step by step with
plain Python lists: it loops over the running batch every step, keeps no running totals, never runs
several decode steps in one event, keys the prefix cache by tuples of hashes and keeps its free blocks
one by one in a Python list (the engine: a tree of node ids, counters, and records of runs of blocks), so
it shares no mechanism with the compiled engine.  With ``dp_lockstep`` the replicas are one data-parallel group
(rule 17): one event per group step, every replica decides at it, idle ones get a dummy step, and the step
lasts the longest padded time, padding priced as decodes at ``c_d``.
"""

from __future__ import annotations

import heapq
import math


def _blocks(tokens, bs):
    return -(-tokens // bs)


class _Req:
    def __init__(self, idx, prompt, output, join):
        self.idx, self.prompt, self.output, self.join = idx, prompt, output, join
        self.computed = 0        # tokens in the KV cache
        self.generated = 0       # output tokens produced so far
        self.held = 0            # blocks held (without prefix caching)
        self.phase = "waiting"
        self.first = None
        self.sched = None
        self.end = None
        self.preemptions = 0
        self.replica = -1
        self.cached = 0
        self.path = []           # [(node key, first block, end block)] of its prompt prefix
        self.path_blocks = 0
        self.nodes_held = []     # node keys it holds (a prefix of its path)


def _paths(reqs, hashes, block_tokens, bs):
    """Each request's path of prefix nodes: node = the tuple of hashes up to a block (rule 13)."""
    coverage = {}
    for r in reqs:
        chain = ()
        for j, h in enumerate(hashes[r.idx] if hashes is not None else ()):
            chain = chain + (int(h),)
            covered = min(block_tokens, r.prompt - block_tokens * j)
            assert coverage.setdefault(chain, covered) == covered
            first = block_tokens * j // bs
            end = max((block_tokens * j + covered) // bs, first)
            r.path.append((chain, first, end))
        r.path_blocks = r.path[-1][2] if r.path else 0


def reference(arrival_s, prompt, output, *, replicas=1, router="round_robin", chunked=False, max_num_seqs=256,
              max_num_batched_tokens=16384, block_size=16, kv_blocks=10_000, prefill=(0, 0, 0), decode=(0, 0, 0),
              decode_large=None, large_threshold=None, watermark=None, max_paddings=256, prefix_caching=False,
              prefix_hashes=None, prefix_block_tokens=None, affinity_margin=16, dp_lockstep=False):
    """Per-request lists: replica, sched, first, end, preemptions, cached, dropped (None for rejected requests)."""
    bs = block_size
    cap = kv_blocks
    wm = int((watermark if watermark is not None else (0.0 if chunked else 0.01)) * cap)
    reqs = [_Req(i, int(p), int(o), float(a)) for i, (a, p, o) in enumerate(zip(arrival_s, prompt, output))]
    if prefix_caching:
        _paths(reqs, prefix_hashes, prefix_block_tokens, bs)

    def never(r):
        if _blocks(r.prompt + r.output - 1, bs) > cap:
            return True
        return not chunked and (r.prompt > max_num_batched_tokens or _blocks(r.prompt, bs) > cap - wm)

    accepted = [r for r in reqs if not never(r)]
    joins = sorted(accepted, key=lambda r: (r.join, r.idx))
    waiting = [[] for _ in range(replicas)]
    running = [[] for _ in range(replicas)]   # admission order
    in_flight = [None] * replicas             # (end time, decodes, prefill pieces [(req, chunk)], blocks reserved)
    queue = [[("x",)] * cap for _ in range(replicas)]   # free blocks, front = next taken (prefix caching)
    registered = [{} for _ in range(replicas)]          # node key -> leading blocks registered
    holders = [{} for _ in range(replicas)]             # node key -> running requests holding it
    own_cached = [{} for _ in range(replicas)]          # request -> its own blocks kept cached after a preemption
    events = []                               # (time, replica); lock step: (time, -1), the group's step
    own_step = [None] * replicas              # lock step: (own time, tokens, decodes) of the step just decided
    rr = 0

    # ------------------------------------------------------------------ KV accounting
    def own_blocks(r, kv):
        return max(_blocks(kv, bs) - r.path_blocks, 0)

    def in_use(g):
        """Blocks held by the requests on g as of its last completed step."""
        if not prefix_caching:
            return sum(r.held for r in running[g])
        reserved = in_flight[g][3] if in_flight[g] is not None else 0
        return cap - len(queue[g]) - reserved

    def waiting_blocks(g):
        return sum(_blocks(r.prompt + r.generated, bs) for r in waiting[g])

    def take(g, m):
        """Take m blocks from the front of the free list, evicting what they cached (leaf first)."""
        for _ in range(m):
            block = queue[g].pop(0)
            if block[0] == "n":
                assert block[2] == registered[g][block[1]] - 1   # a node loses its last block first
                registered[g][block[1]] -= 1
            elif block[0] == "o":
                assert block[2] == own_cached[g][block[1]] - 1
                own_cached[g][block[1]] -= 1
                if own_cached[g][block[1]] == 0:
                    del own_cached[g][block[1]]

    def hold(g, r, b_from, b_to, commit):
        """Free blocks r takes to extend its KV from blocks [0, b_from) to [0, b_to) (rule 15)."""
        cost = new = 0
        for key, first, end in r.path:
            if first >= b_to:
                break
            count = registered[g].get(key, 0)
            if key not in r.nodes_held:
                if holders[g].get(key, 0) == 0:
                    cost += count
                    if commit:
                        queue[g] = [b for b in queue[g] if not (b[0] == "n" and b[1] == key)]
                if commit:
                    holders[g][key] = holders[g].get(key, 0) + 1
                    r.nodes_held.append(key)
            lo, hi = max(b_from, first + count), min(end, b_to)
            if hi > lo:
                new += hi - lo
                if commit:
                    registered[g][key] = hi - first
        if b_to > r.path_blocks:
            lo = max(b_from, r.path_blocks)
            if r in own_cached[g]:
                cost += own_cached[g][r]
                lo = max(lo, r.path_blocks + own_cached[g][r])
                if commit:
                    queue[g] = [b for b in queue[g] if not (b[0] == "o" and b[1] is r)]
                    del own_cached[g][r]
            new += max(b_to - lo, 0)
        if commit:
            take(g, new)
        return cost + new

    def release(g, r, kv, preempted):
        """r frees its blocks: its own first (last block first), then the nodes nobody holds, deepest first."""
        if not prefix_caching:
            freed, r.held = r.held, 0
            return freed
        own = own_blocks(r, kv)
        if preempted:
            full = max(kv // bs - r.path_blocks, 0)
            queue[g] += [("x",)] * (own - full) + [("o", r, i) for i in range(full - 1, -1, -1)]
            if full:
                own_cached[g][r] = full
        else:
            queue[g] += [("x",)] * own
        freed = own
        for key in reversed(r.nodes_held):
            holders[g][key] -= 1
            if holders[g][key] == 0:
                count = registered[g].get(key, 0)
                queue[g] += [("n", key, i) for i in range(count - 1, -1, -1)]
                freed += count
        r.nodes_held = []
        return freed

    def free_now(g, reserved):
        return len(queue[g]) if prefix_caching else cap - sum(r.held for r in running[g]) - reserved

    def cached_prefix(g, r):
        """Blocks of r's prompt path registered on replica g, and whether the whole path is."""
        h = 0
        for key, first, end in r.path:
            count = registered[g].get(key, 0)
            h += count
            if count < end - first:
                return h, False
        return h, True

    def hit_blocks(g, r, tokens):
        h, whole = cached_prefix(g, r)
        h += own_cached[g].get(r, 0) if whole else 0
        return max(0, min(h, (tokens - 1) // bs))   # an empty prompt looks nothing up

    # ------------------------------------------------------------------ preemption, admission
    def preempt(g, victim, reserved):
        running[g].remove(victim)
        freed = release(g, victim, victim.computed, True)
        if victim.phase == "decode":
            pass   # keeps its generated tokens
        victim.computed = 0
        victim.phase = "waiting"
        victim.preemptions += 1
        waiting[g].insert(0, victim)
        return freed

    def admit(g, r, upto, hit, now):
        waiting[g].pop(0)
        if prefix_caching:
            hold(g, r, 0, _blocks(upto, bs), True)
        else:
            r.held = _blocks(upto, bs)
        r.phase = "prefill"
        if r.sched is None:
            r.sched = now
            r.cached = hit
        r.computed = upto
        running[g].append(r)

    def decide(g, now):
        limit = max_num_seqs
        pieces = []          # (request, tokens computed now, tokens in its KV before them)
        decodes = []
        preempted = 0
        reserved = 0         # blocks taken for this step's decodes (without prefix caching)
        if not chunked and waiting[g]:
            tokens_max = tokens_sum = 0
            while waiting[g]:
                r = waiting[g][0]
                tokens = r.prompt + r.generated
                if r.generated > 0 and (tokens > max_num_batched_tokens or _blocks(tokens, bs) > cap - wm):
                    waiting[g].pop(0)
                    r.phase = "dropped"
                    continue
                hit = hit_blocks(g, r, tokens) * bs if prefix_caching else 0
                cost = hold(g, r, 0, _blocks(tokens, bs), False) if prefix_caching else _blocks(tokens, bs)
                if free_now(g, 0) - cost < wm:
                    break
                n = len(pieces) + 1
                new_max = max(tokens_max, tokens)
                if n * new_max > max_num_batched_tokens or len(running[g]) + 1 > limit \
                        or n * new_max - (tokens_sum + tokens) > max_paddings:
                    break
                admit(g, r, tokens, hit, now)
                pieces.append((r, tokens - hit, hit))
                tokens_max, tokens_sum = new_max, tokens_sum + tokens
        if chunked or not pieces:
            # rule 8, request by request
            free = free_now(g, 0)
            i = 0
            while i < len(running[g]) and running[g][i].phase == "decode":
                r = running[g][i]
                need = 1 if r.computed % bs == 0 else 0
                want = need if chunked else 1
                itself = False
                while free < want:
                    victim = running[g][-1]
                    free += preempt(g, victim, reserved)
                    preempted += 1
                    if victim is r:
                        itself = True
                        break
                if itself:
                    break
                if need:
                    free -= 1
                    if prefix_caching:
                        take(g, 1)
                    else:
                        reserved += 1
                i += 1
            decodes = [r for r in running[g] if r.phase == "decode"]
        if chunked:
            budget = max_num_batched_tokens - len(decodes)
            free = free_now(g, reserved)
            partial = [r for r in running[g] if r.phase == "prefill"]
            assert len(partial) <= 1 and (not partial or running[g][-1] is partial[0])
            if partial and budget > 0:
                r = partial[0]
                tokens = r.prompt + r.generated
                chunk = min(tokens - r.computed, budget)
                b_from, b_to = _blocks(r.computed, bs), _blocks(r.computed + chunk, bs)
                cost = hold(g, r, b_from, b_to, False) if prefix_caching else b_to - b_from
                if cost > free:
                    preempt(g, r, reserved)
                    preempted += 1
                else:
                    if prefix_caching:
                        hold(g, r, b_from, b_to, True)
                    else:
                        r.held = b_to
                    free -= cost
                    budget -= chunk
                    pieces.append((r, chunk, r.computed))
                    r.computed += chunk
            if not preempted:
                while waiting[g] and budget > 0 and len(running[g]) + 1 <= limit:
                    r = waiting[g][0]
                    tokens = r.prompt + r.generated
                    hit = hit_blocks(g, r, tokens) * bs if prefix_caching else 0
                    chunk = min(tokens - hit, budget)
                    b_to = _blocks(hit + chunk, bs)
                    cost = hold(g, r, 0, b_to, False) if prefix_caching else b_to
                    if cost + (wm if decodes or pieces else 0) > free:
                        break
                    admit(g, r, hit + chunk, hit, now)
                    free -= cost
                    budget -= chunk
                    pieces.append((r, chunk, hit))
        if not pieces and not decodes:
            if preempted and waiting[g]:
                return decide(g, now)      # everyone was preempted: vLLM schedules again at once
            assert not waiting[g]
            in_flight[g] = None
            return
        n = len(decodes)
        a_d, b_d, c_d = decode_coefs(n)
        t = 0.0
        if pieces:
            t += max(prefill[0], a_d) if n else prefill[0]
            t += sum(prefill[1] * c + prefill[2] * c * (p0 + c) for _, c, p0 in pieces)
        else:
            t += a_d
        if n:
            t += b_d * sum(r.prompt + r.generated for r in decodes) + c_d * n
        blocks_reserved = sum(1 for r in decodes if r.computed % bs == 0)
        in_flight[g] = (now + t, decodes, [r for r, _, _ in pieces], blocks_reserved)
        if dp_lockstep:
            own_step[g] = (t, sum(c for _, c, _ in pieces) + n, n)
        else:
            heapq.heappush(events, (now + t, g))

    def decode_coefs(n):
        return decode_large if decode_large is not None and n >= large_threshold else decode

    def group_step(now):
        """Rule 17: every replica completes its step and decides the next; idle ones run a dummy (one decode of
        context 1) while any has work; all end after the longest step padded to the most tokens."""
        for h in range(replicas):
            if in_flight[h] is not None:
                apply(h, now)
        for h in range(replicas):
            own_step[h] = None
            decide(h, now)
        if all(x is None for x in own_step):
            return
        a_d, b_d, c_d = decode_coefs(1)
        for h in range(replicas):
            if own_step[h] is None:
                in_flight[h] = (now, [], [], 0)
                own_step[h] = (a_d + b_d + c_d, 1, 1)
        n_max = max(tokens for _, tokens, _ in own_step)
        length = max(t + (n_max - tokens) * decode_coefs(n + n_max - tokens)[2] for t, tokens, n in own_step)
        for h in range(replicas):
            in_flight[h] = (now + length,) + in_flight[h][1:]
        heapq.heappush(events, (now + length, -1))

    def apply(g, now):
        _, decodes, pieces, _ = in_flight[g]
        in_flight[g] = None
        for r in decodes:
            r.computed += 1
            if not prefix_caching:
                r.held = _blocks(r.computed, bs)
            r.generated += 1
            if r.generated == r.output:
                r.end, r.phase = now, "done"
                running[g].remove(r)
                release(g, r, r.computed, False)
        for r in pieces:
            if r.computed == r.prompt + r.generated:
                r.first = now if r.first is None else r.first
                r.generated += 1
                if r.generated >= r.output:
                    r.end, r.phase = now, "done"
                    running[g].remove(r)
                    release(g, r, r.computed, False)
                else:
                    r.phase = "decode"

    pending = set()
    i = 0
    while i < len(joins) or events:
        t_join = joins[i].join if i < len(joins) else math.inf
        t_event = events[0][0] if events else math.inf
        if t_join <= t_event:
            r = joins[i]
            i += 1
            load = [len(waiting[h]) + len(running[h]) for h in range(replicas)]
            if router == "round_robin":
                g = rr % replicas
                rr += 1
            elif router == "least_outstanding":
                g = min(range(replicas), key=lambda h: (load[h], h))
            elif router == "least_kv":
                g = min(range(replicas), key=lambda h: (in_use(h) + waiting_blocks(h), h))
            else:
                least = min(range(replicas), key=lambda h: (load[h], h))
                best = min(range(replicas), key=lambda h: (-cached_prefix(h, r)[0], load[h], h))
                g = best if cached_prefix(best, r)[0] > 0 and load[best] <= load[least] + affinity_margin else least
            r.replica = g
            waiting[g].append(r)
            if dp_lockstep:
                if not events:   # an idle group starts a step at once; otherwise the request waits for its end
                    heapq.heappush(events, (t_join, -1))
                continue
            if in_flight[g] is None and g not in pending:
                pending.add(g)
                heapq.heappush(events, (t_join, g))
            continue
        now, g = heapq.heappop(events)
        if g < 0:
            group_step(now)
            continue
        if g in pending:
            pending.discard(g)
        else:
            apply(g, now)
        decide(g, now)
    ok = {r.idx for r in accepted}
    return {
        "replica": [r.replica if r.idx in ok else -1 for r in reqs],
        "sched": [r.sched for r in reqs],
        "first": [r.first for r in reqs],
        "end": [r.end for r in reqs],
        "preemptions": [r.preemptions for r in reqs],
        "cached": [r.cached for r in reqs],
        "dropped": [r.phase == "dropped" for r in reqs],
    }
