"""What Redis may do with its memory: the one rule both sides check when they connect.

A Redis that evicts keys under memory pressure would drop stored deliveries (answered 200) or the
once-per-event records (redelivered events would then run twice). Only ``noeviction`` keeps both:
a full Redis then refuses new writes (the endpoint answers 503, the sender redelivers later), while
the workers, whose scripts may run out of memory (``allow-oom``), keep draining and free it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["SAFE_POLICY", "memory_report", "policy_error"]

SAFE_POLICY = "noeviction"


def policy_error(info: Mapping[str, Any]) -> str | None:
    """Why the server described by ``INFO memory`` cannot be used, or None when it can."""
    policy = info.get("maxmemory_policy")
    if isinstance(policy, bytes):
        policy = policy.decode()
    if policy is None or policy == SAFE_POLICY:
        return None
    what = "any key" if str(policy).startswith("allkeys") else "keys with an expiry (the once-per-event records)"
    return (
        f"Redis has maxmemory-policy {policy}: under memory pressure it evicts {what}, losing stored deliveries "
        f"or running redelivered events twice. Set maxmemory-policy {SAFE_POLICY} (redis.conf, or "
        f"CONFIG SET maxmemory-policy {SAFE_POLICY})"
    )


def memory_report(info: Mapping[str, Any]) -> dict[str, Any]:
    """Used and maximum memory (bytes; max 0 means no limit) and the policy, for health and metrics."""
    policy = info.get("maxmemory_policy")
    return {
        "used_bytes": int(info.get("used_memory", 0)),
        "max_bytes": int(info.get("maxmemory", 0)),
        "policy": policy.decode() if isinstance(policy, bytes) else policy,
    }
