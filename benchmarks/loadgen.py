"""The benchmarks' load generator: the engine of ``wa-middleware loadtest``, re-exported.

It lives in the installed package (`wa_middleware.ops.loadtest`), so a user's ``wa-middleware
loadtest`` against their own deployment and ``python -m benchmarks`` measure with the same open-loop
generator: request ``k`` scheduled at ``start + k / rate``, its latency taken from that scheduled
time (no coordinated omission), keep-alive HTTP/1.1 connections opened on demand, the generator's
own lateness recorded and flagged.
"""

from __future__ import annotations

from wa_middleware.ops.loadtest import BEHIND_MS, Latencies, LoadGenerator, LoadResult, LoadSpec

__all__ = ["BEHIND_MS", "Latencies", "LoadGenerator", "LoadResult", "LoadSpec"]
