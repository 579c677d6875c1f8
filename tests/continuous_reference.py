"""An independent, slow reference of the continuous engine's rules (FCFS policy only).

Written from the rules in the docstring of :mod:`workbench.sim.continuous_engine`,
step by step with plain Python lists: it loops over the running batch every
step, keeps no running totals and never runs several decode steps in one
event, so it shares no mechanism with the compiled engine.
"""

from __future__ import annotations

import heapq
import math


def _blocks(tokens, bs):
    return -(-tokens // bs)


class _Req:
    def __init__(self, idx, prompt, output, join):
        self.idx, self.prompt, self.output, self.join = idx, prompt, output, join
        self.computed = 0        # prompt tokens in the KV cache
        self.generated = 0
        self.held = 0            # blocks held
        self.phase = "waiting"
        self.first = None
        self.sched = None
        self.end = None
        self.preemptions = 0
        self.replica = -1


def reference(arrival_s, prompt, output, *, replicas=1, router="round_robin", chunked=False, max_num_seqs=256,
              max_num_batched_tokens=16384, block_size=16, kv_blocks=10_000, prefill=(0, 0, 0), decode=(0, 0, 0),
              decode_large=None, large_threshold=None):
    """Per-request dict lists: replica, sched, first, end, preemptions (None for rejected requests)."""
    bs = block_size
    reqs = [_Req(i, int(p), int(o), float(a)) for i, (a, p, o) in enumerate(zip(arrival_s, prompt, output))]
    accepted = [r for r in reqs
                if _blocks(r.prompt + r.output - 1, bs) <= kv_blocks and (chunked or r.prompt <= max_num_batched_tokens)]
    joins = sorted(accepted, key=lambda r: (r.join, r.idx))
    waiting = [[] for _ in range(replicas)]
    running = [[] for _ in range(replicas)]   # admission order
    in_flight = [None] * replicas             # (end time, decodes, prefill pieces [(req, chunk)])
    events = []                               # (time, replica)
    rr = 0

    def used(g):
        return sum(r.held for r in running[g])

    def waiting_blocks(g):
        return sum(_blocks(r.prompt, bs) for r in waiting[g])

    def preempt(g, victim):
        running[g].remove(victim)
        victim.held = 0
        victim.computed = 0
        victim.generated = 0
        victim.phase = "waiting"
        victim.preemptions += 1
        waiting[g].insert(0, victim)

    def decide(g, now):
        limit = max_num_seqs
        decodes = [r for r in running[g] if r.phase == "decode"]
        pieces = []
        preempted = False
        if not chunked and waiting[g]:
            tokens = 0
            while waiting[g]:
                r = waiting[g][0]
                need = _blocks(r.prompt, bs)
                if tokens + r.prompt > max_num_batched_tokens or len(running[g]) + 1 > limit \
                        or used(g) + need > kv_blocks:
                    break
                waiting[g].pop(0)
                r.phase, r.held, r.sched = "prefill", need, now if r.sched is None else r.sched
                running[g].append(r)
                pieces.append((r, r.prompt))
                tokens += r.prompt
            if pieces:
                decodes = []
        if not pieces or chunked:
            def need_of(rs):
                return sum(_blocks(r.prompt + r.generated, bs) - r.held for r in rs)
            while decodes and used(g) + need_of(decodes) > kv_blocks:
                victim = running[g][-1]
                preempt(g, victim)
                preempted = True
                decodes = [r for r in running[g] if r.phase == "decode"]
            reserve = used(g) + need_of(decodes)
        if chunked:
            budget = max_num_batched_tokens - len(decodes)
            partial = [r for r in running[g] if r.phase == "prefill"]
            assert len(partial) <= 1
            if partial and budget > 0:
                r = partial[0]
                chunk = min(r.prompt - r.computed, budget)
                extra = _blocks(r.computed + chunk, bs) - r.held
                if reserve + extra > kv_blocks:
                    reserve -= r.held
                    preempt(g, r)
                    preempted = True
                else:
                    reserve += extra
                    r.held += extra
                    budget -= chunk
                    pieces.append((r, chunk))
            if not preempted:
                while waiting[g] and budget > 0 and len(running[g]) + 1 <= limit:
                    r = waiting[g][0]
                    chunk = min(r.prompt, budget)
                    need = _blocks(chunk, bs)
                    if reserve + need > kv_blocks:
                        break
                    waiting[g].pop(0)
                    r.phase, r.held, r.sched = "prefill", need, now if r.sched is None else r.sched
                    running[g].append(r)
                    reserve += need
                    budget -= chunk
                    pieces.append((r, chunk))
        if not pieces and not decodes:
            assert not waiting[g]
            in_flight[g] = None
            return
        n = len(decodes)
        if decode_large is not None and n >= large_threshold:
            a_d, b_d, c_d = decode_large
        else:
            a_d, b_d, c_d = decode
        t = 0.0
        if pieces:
            t += max(prefill[0], a_d) if n else prefill[0]
            t += sum(prefill[1] * c + prefill[2] * c * (r.computed + c) for r, c in pieces)
        else:
            t += a_d
        if n:
            t += b_d * sum(r.prompt + r.generated for r in decodes) + c_d * n
        in_flight[g] = (now + t, decodes, pieces)
        heapq.heappush(events, (now + t, g))

    def apply(g, now):
        _, decodes, pieces = in_flight[g]
        for r in decodes:
            r.held = _blocks(r.prompt + r.generated, bs)
            r.generated += 1
            if r.generated == r.output:
                r.end, r.phase = now, "done"
                running[g].remove(r)
        for r, chunk in pieces:
            r.computed += chunk
            if r.computed == r.prompt:
                r.generated = 1
                r.first = now if r.first is None else r.first
                if r.output == 1:
                    r.end, r.phase = now, "done"
                    running[g].remove(r)
                else:
                    r.phase = "decode"
        in_flight[g] = None

    pending = set()
    i = 0
    while i < len(joins) or events:
        t_join = joins[i].join if i < len(joins) else math.inf
        t_event = events[0][0] if events else math.inf
        if t_join <= t_event:
            r = joins[i]
            i += 1
            if router == "round_robin":
                g = rr % replicas
                rr += 1
            elif router == "least_outstanding":
                g = min(range(replicas), key=lambda h: (len(waiting[h]) + len(running[h]), h))
            else:
                g = min(range(replicas), key=lambda h: (used(h) + waiting_blocks(h), h))
            r.replica = g
            waiting[g].append(r)
            if in_flight[g] is None and g not in pending:
                pending.add(g)
                heapq.heappush(events, (t_join, g))
            continue
        now, g = heapq.heappop(events)
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
    }
