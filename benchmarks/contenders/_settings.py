"""Settings shared by the app modules, read once from the environment the runner sets."""

from __future__ import annotations

import os

REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/11")
#: dramatiq key namespace: every key the benchmark writes starts with it.
NAMESPACE = os.environ.get("BENCH_NAMESPACE", "wabench")
QUEUE = os.environ.get("BENCH_QUEUE", "bench")
#: Callback / handler cost, in milliseconds (0: a no-op).
SLEEP_MS = int(os.environ.get("BENCH_SLEEP_MS", "0"))
#: When set, handlers SADD the ids of the events they handled to this key (crash comparison).
RECORD_KEY = os.environ.get("BENCH_RECORD_KEY", "")
#: When set, callbacks RPUSH their lag (ms from acceptance to callback start) to this key.
LAG_KEY = os.environ.get("BENCH_LAG_KEY", "")
FLOOR_KEY = f"{NAMESPACE}:floor"
