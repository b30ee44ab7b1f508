"""Decisions per second and latency of the pure decision, on one core.

A catalog of 1,000 resources across the three demo tiers, 1,000 users spread over 50 groups,
and a mix of actions; inputs are gathered up front (as enforcement does before deciding),
so this measures exactly ``tiers.decision.decide``.

    .venv/bin/python bench/decision.py [--decisions 200000]
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tiers.decision import decide
from tiers.types import (
    Action,
    ActionClass,
    DecisionInput,
    DeviceInfo,
    ResourceInfo,
    Subject,
    TierPolicy,
    ZoneInfo,
)

TIERS = [
    TierPolicy("low", 10, "proxy", None, 3600, 0),
    TierPolicy("high", 20, "stream", 900, 900, 0, allowed_zones=frozenset({"office", "vpn"}), recording=True),
    TierPolicy("critical", 30, "stream", 0, 0, 0, approval_required=True, recording=True, watermark=True),
]
GROUPS = [f"team-{i}" for i in range(50)]
KINDS = {"low": "web", "high": "vnc", "critical": "ssh"}


def build(rng: random.Random, n_resources: int, n_users: int, n_inputs: int) -> list[DecisionInput]:
    resources = []
    for i in range(n_resources):
        tier = TIERS[i % 3]
        resources.append(ResourceInfo(
            slug=f"r{i}", name=f"Resource {i}", kind=KINDS[tier.name], tier=tier,
            allowed_groups=frozenset(rng.sample(GROUPS, 3)),
            allowed_users=frozenset({f"u{rng.randrange(n_users)}"})))
    ages = [None, 30.0, 1200.0, 5000.0]
    users = [Subject(f"u{i}", frozenset(rng.sample(GROUPS, 4)), True, rng.choice(ages))
             for i in range(n_users)]
    zones = [ZoneInfo("office", True), ZoneInfo("vpn", True), ZoneInfo("internet", False)]
    by_group: dict[str, list[ResourceInfo]] = {g: [] for g in GROUPS}
    for r in resources:
        for g in r.allowed_groups:
            by_group[g].append(r)
    inputs = []
    for _ in range(n_inputs):
        user = rng.choice(users)
        # Most requests are to something the user's team has; some are not (denied).
        pool = by_group[rng.choice(sorted(user.groups))] if rng.random() < 0.8 else resources
        resource = rng.choice(pool)
        kind = "http" if resource.kind == "web" else "desktop.open"
        action = Action(kind, rng.choice(list(ActionClass)), "GET", "/x")
        inputs.append(DecisionInput(
            subject=user, device=DeviceInfo(), zone=rng.choice(zones), resource=resource,
            action=action, now=1e9, grant_expires_at=rng.choice([None, 1e9 + 600]),
            one_time_mfa=rng.random() < 0.2))
    return inputs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--decisions", type=int, default=200_000)
    parser.add_argument("--sample", type=int, default=20_000, help="decisions timed one by one")
    args = parser.parse_args()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})
    rng = random.Random(42)
    inputs = build(rng, 1000, 1000, 10_000)
    outcomes: dict[str, int] = {}
    for inp in inputs:  # warm-up, and the outcome mix the figures are for
        outcome = str(decide(inp).outcome)
        outcomes[outcome] = outcomes.get(outcome, 0) + 1

    start = time.perf_counter()
    n = args.decisions
    for i in range(n):
        decide(inputs[i % len(inputs)])
    elapsed = time.perf_counter() - start

    timings = []
    clock = time.perf_counter_ns
    for i in range(args.sample):
        inp = inputs[i % len(inputs)]
        t0 = clock()
        decide(inp)
        timings.append(clock() - t0)
    timings.sort()
    p50 = timings[len(timings) // 2] / 1000
    p99 = timings[int(len(timings) * 0.99)] / 1000
    print("decision benchmark: 1,000 resources, 1,000 users in 50 groups, one core")
    print(f"  outcome mix        {dict(sorted(outcomes.items()))}")
    print(f"  throughput         {n / elapsed:,.0f} decisions/s ({n:,} decisions in {elapsed:.2f} s)")
    print(f"  latency p50        {p50:.1f} µs")
    print(f"  latency p99        {p99:.1f} µs")
    print(f"  mean (sampled)     {statistics.fmean(timings) / 1000:.1f} µs")
    print(f"  target             20,000 decisions/s -> {'met' if n / elapsed >= 20_000 else 'NOT met'}")


if __name__ == "__main__":
    main()
