"""Check the private pieces of dramatiq listed in ``wa_middleware/worker/_dramatiq.py``, for the dramatiq it imports.

Run by ``tests/worker/test_dramatiq_contract.py`` in a subprocess, with ``PYTHONPATH`` pointing first at a
directory holding one dramatiq release (or at nothing, for the installed one)::

    python tests/worker/dramatiq_contract_check.py --redis-url URL --namespace NS --next-sha256 HASH

Every check runs even when an earlier one failed. Prints one JSON object (the dramatiq version and file it
imported, the failures, and the normalised source of ``_RedisConsumer.__next__`` when its hash is not one of
the accepted ones) and exits 1 if anything failed. Nothing from dramatiq is imported at module level: the
test imports `normalise` and `shape_hash` from here.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import sys
import textwrap
import tokenize
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

_SKIPPED = {tokenize.COMMENT, tokenize.NL, tokenize.ENCODING, tokenize.ENDMARKER}


def normalise(source: str) -> str:
    """``source`` without comments, docstrings, blank lines, layout or trailing commas: one logical line a line.

    Each line is its indentation depth (two spaces a level) and its tokens joined by one space, so a
    reformatting (line breaks inside brackets, other indents, a trailing comma before a bracket on a
    later line) or a changed comment keeps the result, while any change of a name, literal, operator
    or nesting does not. The same on Python 3.10 to 3.13 (checked for dramatiq's ``__next__``).
    """
    lines: list[str] = []
    depth = 0
    tokens: list[tokenize.TokenInfo] = []
    for tok in tokenize.generate_tokens(io.StringIO(textwrap.dedent(source)).readline):
        if tok.type in _SKIPPED:
            continue
        if tok.type == tokenize.INDENT:
            depth += 1
        elif tok.type == tokenize.DEDENT:
            depth -= 1
        elif tok.type == tokenize.NEWLINE:
            # A statement of string literals only is a docstring (or dead code): not shape.
            if tokens and not all(t.type == tokenize.STRING for t in tokens):
                lines.append("  " * depth + " ".join(t.string for t in tokens))
            tokens = []
        elif (
            tok.string in (")", "]", "}") and tokens and tokens[-1].string == "," and tok.start[0] > tokens[-1].start[0]
        ):
            tokens[-1] = tok  # a magic trailing comma: the closing bracket on a line of its own
        else:
            tokens.append(tok)
    if tokens:  # source without a final newline
        lines.append("  " * depth + " ".join(t.string for t in tokens))
    return "\n".join(lines) + "\n"


def shape_hash(source: str) -> str:
    """The SHA-256 of `normalise`\\ (``source``)."""
    return hashlib.sha256(normalise(source).encode()).hexdigest()


class Checks:
    def __init__(self) -> None:
        self.failures: list[str] = []

    @contextmanager
    def check(self, name: str) -> Iterator[None]:
        try:
            yield
        except Exception as exc:  # one failed check must not hide the others
            detail = "".join(traceback.format_exception_only(type(exc), exc)).strip()
            if isinstance(exc, AssertionError):
                detail = str(exc) or traceback.format_exc(limit=-1).strip()
            self.failures.append(f"{name}: {detail}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--redis-url", required=True)
    parser.add_argument("--namespace", required=True)
    parser.add_argument("--next-sha256", action="append", required=True, help="an accepted shape of __next__")
    args = parser.parse_args(argv)

    import dramatiq

    report: dict[str, Any] = {"dramatiq": dramatiq.__version__, "file": dramatiq.__file__}
    checks = Checks()
    run(checks, args.redis_url, args.namespace, set(args.next_sha256), report)
    report["failures"] = checks.failures
    print(json.dumps(report))
    for failure in checks.failures:
        print(f"FAILED {failure}", file=sys.stderr)
    return 1 if checks.failures else 0


def run(checks: Checks, redis_url: str, ns: str, accepted: set[str], report: dict[str, Any]) -> None:
    import inspect

    import redis
    from dramatiq.brokers.redis import RedisBroker

    consumer_class: Any = None
    with checks.check("dramatiq.brokers.redis._RedisConsumer exists"):
        from dramatiq.brokers import redis as dramatiq_redis

        consumer_class = dramatiq_redis._RedisConsumer
        assert isinstance(consumer_class, type), f"_RedisConsumer is a {type(consumer_class).__name__}"

    if consumer_class is not None:
        with checks.check("_RedisConsumer.__next__ has the recorded shape"):
            found = report["next_sha256"] = shape_hash(inspect.getsource(consumer_class.__next__))
            if found not in accepted:
                report["next_normalised"] = normalise(inspect.getsource(consumer_class.__next__))
                raise AssertionError(
                    f"normalised source hashes to {found}, not one of {sorted(accepted)}: compare it with the "
                    "copy in wa_middleware/worker/broker.py (_PlanningConsumer.__next__)"
                )

    contract: Any = None
    with checks.check("wa_middleware.worker._dramatiq imports"):
        import wa_middleware.worker._dramatiq as contract
    if contract is None:
        return  # nothing of ours to check against this dramatiq
    CONSUMER_ATTRIBUTES = contract.CONSUMER_ATTRIBUTES

    with checks.check("wa_middleware.worker.broker and .recovery import"):
        import wa_middleware.worker.broker
        import wa_middleware.worker.recovery

        assert wa_middleware.worker.broker.RedisConsumer is consumer_class, "a different _RedisConsumer"

    queue = "wa-contract"
    client = redis.Redis.from_url(redis_url)
    broker: Any = None
    try:
        with checks.check("RedisBroker(url=, namespace=, heartbeat_timeout=)"):
            broker = RedisBroker(url=redis_url, namespace=ns, heartbeat_timeout=1000)
        if broker is None:
            return

        with checks.check("broker attributes"):
            missing = [
                a for a in ("heartbeat_timeout", "dead_message_ttl", "broker_id", "namespace") if not hasattr(broker, a)
            ]
            assert not missing, f"RedisBroker has no {missing}"
            assert broker.namespace == ns, f"namespace {broker.namespace!r}"
            assert broker.heartbeat_timeout == 1000, f"heartbeat_timeout {broker.heartbeat_timeout!r}"
            assert isinstance(broker.dead_message_ttl, int), f"dead_message_ttl {broker.dead_message_ttl!r}"
            assert isinstance(broker.broker_id, str) and broker.broker_id, f"broker_id {broker.broker_id!r}"

        with checks.check("consumer attributes"):
            consumer = broker.consume(queue, prefetch=2, timeout=100)
            assert isinstance(consumer, consumer_class), f"consume() built a {type(consumer).__name__}"
            missing = [a for a in CONSUMER_ATTRIBUTES if not hasattr(consumer, a)]
            assert not missing, f"the consumer has no {missing}"
            assert isinstance(consumer.message_cache, list), "message_cache is not a list"
            assert isinstance(consumer.queued_message_ids, set), "queued_message_ids is not a set"
            assert consumer.outstanding_message_count == 0, "outstanding_message_count is not 0 on a new consumer"
            assert (consumer.misses, consumer.prefetch, consumer.timeout) == (0, 2, 100), "misses/prefetch/timeout"
            assert consumer.queue_name == queue and consumer.broker is broker, "queue_name/broker"

        with checks.check("consume() builds the broker's consumer_class"):
            # WebhookBroker overrides the `consumer_class` property to plug in its planning consumer.
            sub = type("Sub", (consumer_class,), {})
            broker_class = type("SubBroker", (RedisBroker,), {"consumer_class": property(lambda self: sub)})
            other = broker_class(url=redis_url, namespace=ns)
            try:
                assert type(other.consume(queue)) is sub, "consume() ignores consumer_class"
            finally:
                other.client.close()

        with checks.check("compute_backoff(misses, max_backoff=) returns (misses, backoff ms)"):
            from dramatiq.common import compute_backoff

            misses, backoff = compute_backoff(0, max_backoff=100)
            assert isinstance(misses, int) and 0 <= backoff <= 100, (misses, backoff)

        with checks.check("broker.do_fetch(queue, count) on an empty queue"):
            assert list(broker.do_fetch("wa-contract-empty", 5)) == [], "not empty"

    finally:
        if broker is not None:
            broker.client.close()
        client.close()


if __name__ == "__main__":
    sys.exit(main())
