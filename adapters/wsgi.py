"""WSGI middleware: ``flask_app.wsgi_app = WebhookMiddleware(flask_app.wsgi_app, webhook=wa)``."""

from __future__ import annotations

import heapq
import itertools
import math
import os
import socket
import threading
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from wa_middleware import metrics
from wa_middleware.errors import ConfigurationError, PayloadError, RequestTimeout, WebhookError
from wa_middleware.web import routes
from wa_middleware.web.core import parse_content_length
from wa_middleware.webhook import Webhook

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

    from wa_middleware.web.core import Response

__all__ = ["WebhookMiddleware"]


#: Header names as the core wants them (lower case, ``-``) by environ key, and ``""`` for the keys
#: that are no header (``CONTENT_LENGTH`` and ``CONTENT_TYPE`` are added apart): a server fills the
#: same two dozen keys into every environ, and a dict look-up costs less than slicing and casing each.
#: Bounded, since the header names are the client's to choose.
_NAMES: dict[str, str] = {}
_MAX_NAMES = 256


class WebhookMiddleware:
    """Serve ``webhook.path`` (POST deliveries; GET for Meta's handshake) in front of any WSGI app;
    everything else passes through.

    :param app: the wrapped WSGI application.
    :param webhook: the `Webhook` to serve.
    """

    def __init__(self, app: WSGIApplication, webhook: Webhook) -> None:
        if not isinstance(webhook, Webhook):
            raise ConfigurationError(f"webhook must be a wa_middleware.Webhook, not {webhook!r}")
        self.app = app
        self.webhook = webhook
        self.core = webhook.core
        self.ops = routes.wsgi_routes(webhook)  # health_path / metrics_path, when enabled

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        if not self.core.matches(environ.get("PATH_INFO", "")):
            if self.ops and environ.get("PATH_INFO", "") in self.ops:
                return self.ops[environ["PATH_INFO"]](environ, start_response)  # type: ignore[no-any-return]
            return self.app(environ, start_response)
        started = time.perf_counter()
        try:
            response = self._handle(environ)
        except WebhookError as exc:
            response = self.core.reject(exc)
        except Exception as exc:  # a bug must still not become a 200 or a traceback
            response = self.core.internal_error(exc)
        # A fresh list: a server may add its own headers to it (wsgiref does).
        start_response(response.wsgi_status, list(response.wsgi_headers))
        metrics.request_done(response.status, time.perf_counter() - started)
        return [response.body]

    def _handle(self, environ: WSGIEnvironment) -> Response:
        core = self.core
        headers: dict[str, str] = {}
        names = _NAMES
        for key, value in environ.items():
            name = names.get(key)
            if name is None:
                name = key[5:].replace("_", "-").lower() if key.startswith("HTTP_") else ""
                if len(names) < _MAX_NAMES:
                    names[key] = name
            if name:
                headers[name] = value
        raw_length = environ.get("CONTENT_LENGTH") or ""
        content_length = parse_content_length(raw_length)
        if raw_length:
            headers["content-length"] = raw_length
        if environ.get("CONTENT_TYPE"):
            headers["content-type"] = environ["CONTENT_TYPE"]
        query = environ.get("QUERY_STRING", "")
        early = core.start(environ.get("REQUEST_METHOD", "GET"), headers, content_length, query)
        if early is not None:
            return early
        body = _read_body(environ, content_length, core.max_body_size, core.body_timeout_for(headers))
        if body is None:
            return core.too_large()
        job = core.finish(headers, body)
        self.webhook.sync_enqueuer().enqueue(job.message_id, job.data)
        return core.accepted(job)


class _Watch:
    __slots__ = ("done", "fired", "sock")

    def __init__(self, sock: Any) -> None:
        self.sock = sock
        self.done = False
        self.fired = False


#: Seconds between two looks of the idle deadline thread: no read times out sooner than this
#: without waking it (a deadline before its next look does), and a second apart costs nothing.
_IDLE_LOOK = 1.0


class _Deadlines:
    """One daemon thread that ends the reading side of a socket whose body deadline passed.

    A socket timeout only bounds each ``recv``, and the server's reader loops over ``recv`` until it
    has the bytes asked for: a client sending a byte a second would hold a worker for ever. Shutting
    the reading side down (``SHUT_RD``) makes the blocked ``recv`` return end-of-file at once, the
    read comes back short and the request is a 408; the writing side is untouched, so the 408 is
    still sent. One thread for the process, started on the first body read (and again in a forked
    child).

    Each read costs a heap push and a flag, and wakes the thread only when its deadline comes before
    the time the thread already means to wake at: a deadline is the read's start plus a fixed
    timeout, so a later read's comes later, and the thread, sleeping until the first one (or, with
    none armed, for `_IDLE_LOOK`), is not disturbed by the reads that follow. Waking it for each read
    would cost a thread switch per request.
    """

    def __init__(self) -> None:
        self._reset()
        os.register_at_fork(after_in_child=self._reset)

    def _reset(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._heap: list[tuple[float, int, _Watch]] = []
        self._seq = itertools.count()
        self._thread: threading.Thread | None = None
        #: When the thread will look at the heap next, on its own.
        self._wake_at = math.inf

    def arm(self, sock: Any, timeout: float) -> _Watch:
        watch = _Watch(sock)
        deadline = time.monotonic() + timeout
        entry = (deadline, next(self._seq), watch)
        with self._cond:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="wa-body-deadlines", daemon=True)
                self._thread.start()
            heapq.heappush(self._heap, entry)
            if deadline < self._wake_at:
                self._wake_at = deadline
                self._cond.notify()
        return watch

    def disarm(self, watch: _Watch) -> None:
        # Under the lock: once this returns the socket is never touched again (it may be closed and
        # its descriptor reused right after).
        with self._cond:
            watch.done = True
            # Bodies mostly end in the order they began: dropping finished ones from the top keeps
            # the heap about as large as the reads in progress.
            heap = self._heap
            while heap and heap[0][2].done:
                heapq.heappop(heap)

    def _run(self) -> None:
        cond, heap = self._cond, self._heap
        with cond:
            while True:
                while heap and heap[0][2].done:
                    heapq.heappop(heap)
                if not heap:
                    # Idle: look again in a second rather than wait for a notify, which the next read
                    # would then have to send (a thread switch for every request that comes alone).
                    self._wake_at = time.monotonic() + _IDLE_LOOK
                    cond.wait(_IDLE_LOOK)
                    continue
                wait = heap[0][0] - time.monotonic()
                if wait > 0:
                    self._wake_at = heap[0][0]
                    cond.wait(wait)
                    continue
                watch = heapq.heappop(heap)[2]
                watch.fired = True
                try:
                    watch.sock.shutdown(socket.SHUT_RD)
                except Exception:  # already closed by the client; nothing must stop this thread
                    pass


_deadlines = _Deadlines()


def _read_body(environ: WSGIEnvironment, content_length: int | None, cap: int, timeout: float) -> bytes | None:
    """Read at most ``cap`` bytes; None when the body is larger.

    Without Content-Length the stream is only read when the server says it is terminated
    (``wsgi.input_terminated``); otherwise the body counts as empty, as PEP 3333 requires.
    A body that ends early, or whose framing the server refuses, is a `PayloadError` (400).

    WSGI gives no way to bound a read in time; under gunicorn, which exposes its socket, the whole
    body must arrive within ``timeout`` seconds (a stalled or trickling client gets a 408): each
    ``recv`` waits at most that long, and `_Deadlines` cuts the reading side when the time is up.
    """
    stream = environ["wsgi.input"]
    sock = environ.get("gunicorn.socket")
    previous = sock.gettimeout() if sock is not None else None
    watch = None
    if sock is not None:
        sock.settimeout(timeout)
        watch = _deadlines.arm(sock, timeout)
    try:
        if content_length is not None:
            body = bytes(stream.read(content_length)) if content_length else b""
            if len(body) < content_length:
                raise PayloadError("incomplete body")
            return body
        if not environ.get("wsgi.input_terminated"):
            return b""
        body = bytes(stream.read(cap + 1))
        return None if len(body) > cap else body
    except TimeoutError:
        raise RequestTimeout() from None
    except PayloadError:
        if watch is not None and watch.fired:
            raise RequestTimeout() from None
        raise
    except WebhookError:
        raise
    except Exception:
        if watch is not None and watch.fired:
            raise RequestTimeout() from None
        # The server's own error for broken chunking or a client gone mid-body (gunicorn's
        # NoMoreData, Werkzeug's ClientDisconnected, OSError): the request's fault, not ours.
        raise PayloadError("incomplete body") from None
    finally:
        if watch is not None:
            _deadlines.disarm(watch)
        if sock is not None:
            sock.settimeout(previous)
