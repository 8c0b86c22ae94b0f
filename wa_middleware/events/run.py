"""The one loop that runs the matching callbacks of events.

Every runner goes through `run_callbacks`: the worker (over the units it planned and claimed),
`Webhook.dispatch`, `wa_middleware.testing.run` and ``wa-middleware replay``. Its policy, the same
for all of them:

* Events run in delivery order; the callbacks of one event in registration order.
* `StopPropagation` raised by a callback is a success; the later callbacks of that event do not
  run (reported ``"skipped"``, which the worker records as done: they must not run on a retry).
* A failure (an exception of ``failures``) never stops the other callbacks or events: it is
  reported with its error, and what follows is the caller's: the worker retries that one
  callback alone, `RunReport.raise_first` re-raises it once all ran, ``errors="raise"`` raises it
  at once and runs nothing after it.
* ``hold``: the caller may hold an item back (an ordered callback behind a failed one of its
  conversation waits for it); it is reported ``"held"`` and does not run.
* ``dry_run``: nothing runs; each item that would run is reported ``"dry"``.

The state of one pass (which events were stopped) lives in the loop's locals, never in globals,
so concurrent passes over the same event cannot see each other.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Generic, Literal, NamedTuple, Protocol, TypeVar

if TYPE_CHECKING:
    from .callbacks import Callback, Registry
    from .decode import Event, EventKind

__all__ = ["Item", "Outcome", "Pair", "RunReport", "pairs", "run_all", "run_callbacks"]

State = Literal["ok", "stopped", "skipped", "held", "failed", "dry"]


class Item(Protocol):
    """One (event, callback) to run: a `Pair`, or the worker's planned unit."""

    @property
    def event(self) -> Event: ...

    @property
    def callback(self) -> Callback: ...


class Pair(NamedTuple):
    """An event and one of its matching callbacks."""

    event: Event
    callback: Callback


T = TypeVar("T", bound=Item)


@dataclass(frozen=True, slots=True)
class Outcome(Generic[T]):
    """What happened to one item.

    :ivar state: ``"ok"`` ran; ``"stopped"`` ran and raised `StopPropagation`; ``"skipped"`` not run,
        an earlier callback stopped its event; ``"held"`` held back by the caller; ``"failed"``
        raised ``error``; ``"dry"`` would have run (dry run).
    """

    item: T
    state: State
    error: BaseException | None = None

    @property
    def succeeded(self) -> bool:
        """Ran to the end, or needs no run: nothing left to do for this item."""
        return self.state in ("ok", "stopped", "skipped")


def pairs(
    registry: Registry,
    events: Iterable[Event],
    *,
    kinds: Collection[EventKind] | None = None,
    names: Collection[str] | None = None,
) -> Iterator[Pair]:
    """The (event, matching callback) pairs of ``events`` in run order, optionally narrowed to
    some event kinds or callback names (a replay of one callback, a dry run of one kind)."""
    for event in events:
        if kinds is not None and event.kind not in kinds:
            continue
        for callback in registry.matching(event):
            if names is None or callback.name in names:
                yield Pair(event, callback)


def run_callbacks(
    items: Iterable[T],
    *,
    failures: tuple[type[BaseException], ...] = (Exception,),
    hold: Callable[[T], bool] | None = None,
    dry_run: bool = False,
    around: Callable[[T], AbstractContextManager[Any]] | None = None,
) -> Iterator[Outcome[T]]:
    """Run each item's callback on its event, yielding one `Outcome` per item as it is done.

    Lazy: the next item is taken only once the caller has seen the previous outcome, so ``hold``
    may depend on what the caller learnt from it (a failed unit blocks its conversation).

    :param failures: what counts as a callback failing; anything else propagates (shutdown).
    :param hold: called before an item runs; True holds it back.
    :param dry_run: run nothing; report what would run.
    :param around: a context manager entered around each call (the worker sets the run's replies).
    """
    stopped: set[int] = set()  # ids of the events on which a callback raised StopPropagation
    for item in items:
        event = item.event
        if id(event) in stopped:
            yield Outcome(item, "skipped")
            continue
        if hold is not None and hold(item):
            yield Outcome(item, "held")
            continue
        if dry_run:
            yield Outcome(item, "dry")
            continue
        try:
            if around is None:
                stop = item.callback(event)
            else:
                with around(item):
                    stop = item.callback(event)
        except failures as exc:
            yield Outcome(item, "failed", exc)
            continue
        if stop:
            stopped.add(id(event))
            yield Outcome(item, "stopped")
        else:
            yield Outcome(item, "ok")


@dataclass
class RunReport(Generic[T]):
    """Every outcome of one `run_all`, in order."""

    outcomes: list[Outcome[T]] = field(default_factory=list)

    @property
    def failures(self) -> list[Outcome[T]]:
        return [outcome for outcome in self.outcomes if outcome.state == "failed"]

    def raise_first(self) -> None:
        """Raise the first failure's error, if any."""
        for outcome in self.failures:
            assert outcome.error is not None
            raise outcome.error


def run_all(
    items: Iterable[T],
    *,
    errors: Literal["collect", "raise"] = "collect",
    dry_run: bool = False,
    failures: tuple[type[BaseException], ...] = (Exception,),
) -> RunReport[T]:
    """Run every item (`run_callbacks`) and collect the outcomes.

    :param errors: ``"collect"``: a failure is recorded and the rest still run; ``"raise"``: the
        first failure is raised at once and nothing after it runs (what a test wants).
    """
    report: RunReport[T] = RunReport()
    for outcome in run_callbacks(items, failures=failures, dry_run=dry_run):
        if outcome.error is not None and errors == "raise":
            raise outcome.error
        report.outcomes.append(outcome)
    return report
