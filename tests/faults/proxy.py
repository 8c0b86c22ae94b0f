"""A fault-injecting TCP proxy between a process and a real Redis, acting at a chosen command.

``RedisProxy(upstream_port)`` listens on 127.0.0.1 (a free port: ``.port``, ``.url``) and forwards
every connection to the Redis at ``upstream_port``, one upstream connection per client connection,
from a background thread of the test process (one ``selectors`` loop, no busy waiting). It splits
the client's bytes into commands and Redis's bytes into replies (RESP2 and RESP3), pairs each reply
with its command (pipelines included), and on request:

* ``drop_reply(match)``: the command reaches Redis (it takes effect) but its reply is discarded and
  the connection closed (``then="close"``) or left silent (``then="hang"``): a lost reply;
* ``drop_request(match)``: the command never reaches Redis; the connection is closed (after the
  replies of the commands before it) or left silent;
* ``freeze()`` / ``thaw()``: nothing moves in either direction, connections stay open, bytes are held;
* ``cut()``: every open connection is closed now; ``refuse(True)``: new connections are closed at accept;
* ``counts`` / ``log``: what went through to Redis.

``match`` is a command name (``"EVALSHA"``, ``"SCRIPT LOAD"``, ``"*"``), a tuple of names, a
callable on a :class:`Command`, or ``None`` (any command); ``contains=`` further requires a substring
in one of the arguments and ``script=`` (a sha or the Lua source, see :func:`sha1_of`) an
EVAL/EVALSHA of that script. Mind redis-py's names: its ``incr()`` sends INCRBY.

Pairing rules worth knowing:

* a NOSCRIPT error never counts as a dropped reply of a script: redis-py answers it with SCRIPT LOAD
  and a second EVALSHA, and that one is the reply to lose (``skip_errors=True`` skips every error);
* inside MULTI the reply of a command is ``+QUEUED``: such commands are not matched by ``drop_reply``
  (match ``"EXEC"`` to lose a transaction's reply);
* after (S|P)SUBSCRIBE, MONITOR or CLIENT REPLY OFF/SKIP a connection is passed through unpaired:
  ``drop_request`` still applies to it, ``drop_reply`` no longer does. RESP3 pushes are passed through
  without consuming a command's reply.
"""

from __future__ import annotations

import hashlib
import selectors
import socket
import struct
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Literal

__all__ = [
    "Command",
    "Fault",
    "ProtocolError",
    "RedisProxy",
    "ReplyScanner",
    "RequestParser",
    "command_matcher",
    "sha1_of",
]

Then = Literal["close", "hang"]
Match = str | Iterable[str] | Callable[["Command"], bool] | None

_CHUNK = 256 * 1024
#: Stop reading a side while this much is waiting to be written to the other (back-pressure).
_HIGH_WATER = 8 * 1024 * 1024
#: A connection waiting to deliver its last replies before closing is closed after this anyway.
_LINGER = 5.0
_LOG_ARG = 200
_SUBSCRIBING = frozenset({"SUBSCRIBE", "PSUBSCRIBE", "SSUBSCRIBE", "MONITOR"})


def sha1_of(script: str | bytes) -> str:
    """The sha EVALSHA calls ``script`` by (as redis-py's ``Script.sha`` and SCRIPT LOAD compute it)."""
    return hashlib.sha1(script.encode() if isinstance(script, str) else script).hexdigest()


class ProtocolError(ValueError):
    """Bytes that are not RESP."""


# --------------------------------------------------------------------------------------------- RESP


def _int(line: bytes | bytearray) -> int:
    try:
        return int(line)
    except ValueError:
        raise ProtocolError(f"not an integer: {bytes(line)[:40]!r}") from None


class RequestParser:
    """Splits a client's byte stream into commands: RESP arrays of bulk strings, or inline commands.

    ``feed(data)`` returns ``[(argv, raw), ...]`` for every command completed by ``data`` (``raw`` the
    command's exact bytes); an incomplete command is kept for the next feed. Resumable: a large or
    slowly arriving command is parsed once, not again on every chunk.
    """

    def __init__(self) -> None:
        self._buf = bytearray()
        self._start = 0  # first byte of the command being parsed
        self._pos = 0  # parse cursor
        self._left = -1  # bulk strings still to read in the current array; -1: before a command
        self._argv: list[bytes] = []
        self._need = 0  # no use parsing again before the buffer holds this many bytes

    def feed(self, data: bytes) -> list[tuple[list[bytes], bytes]]:
        buf = self._buf
        buf += data
        out: list[tuple[list[bytes], bytes]] = []
        if len(buf) >= self._need:
            self._need = 0
            self._parse(buf, out)
        if self._start:
            del buf[: self._start]
            self._pos -= self._start
            if self._need:
                self._need -= self._start
            self._start = 0
        return out

    def _parse(self, buf: bytearray, out: list[tuple[list[bytes], bytes]]) -> None:
        while True:
            pos = self._pos
            if self._left < 0:
                if pos >= len(buf):
                    return
                if buf[pos] == 0x2A:  # '*': a multibulk command
                    eol = buf.find(b"\r\n", pos)
                    if eol < 0:
                        return
                    n = _int(buf[pos + 1 : eol])
                    self._pos = eol + 2
                    if n <= 0:  # Redis ignores an empty multibulk: no reply
                        self._emit([], out)
                        continue
                    self._left, self._argv = n, []
                else:  # an inline command: a line of words (Redis ignores an empty one: no reply)
                    eol = buf.find(b"\n", pos)
                    if eol < 0:
                        return
                    self._pos = eol + 1
                    self._argv = bytes(buf[pos:eol]).split()
                    self._emit(self._argv, out)
                    continue
            while self._left > 0:
                pos = self._pos
                eol = buf.find(b"\r\n", pos)
                if eol < 0:
                    return
                if buf[pos] != 0x24:  # '$'
                    raise ProtocolError(f"expected a bulk string in a command, got {bytes(buf[pos:eol])[:40]!r}")
                n = _int(buf[pos + 1 : eol])
                if n < 0:
                    raise ProtocolError("null bulk string in a command")
                end = eol + 2 + n
                if len(buf) < end + 2:
                    self._need = end + 2
                    return
                if buf[end : end + 2] != b"\r\n":
                    raise ProtocolError("bulk string not terminated by CRLF")
                self._argv.append(bytes(buf[eol + 2 : end]))
                self._pos = end + 2
                self._left -= 1
            self._left = -1
            self._emit(self._argv, out)

    def _emit(self, argv: list[bytes], out: list[tuple[list[bytes], bytes]]) -> None:
        out.append((argv, bytes(self._buf[self._start : self._pos])))
        self._start = self._pos
        self._argv = []


_LINE_TYPES = frozenset(b"+-:_,#(")  # simple string, error, integer, null, double, boolean, big number
_BLOB_TYPES = frozenset(b"$!=")  # bulk string, bulk error, verbatim string
_AGGREGATES = frozenset(b"*~>")  # array, set, push (n elements)
ERROR_KINDS = frozenset("-!")


class ReplyScanner:
    """Splits a server's byte stream into top-level RESP2/RESP3 values, without decoding them.

    ``feed(data)`` returns ``[(raw, kind), ...]``: each completed top-level value's exact bytes and its
    type character (``"+"``, ``"-"``, ``"*"``, ``">"`` for a RESP3 push, ...; an attribute ``|`` in
    front of a value belongs to it, and the kind is the value's). Handles every RESP3 type, nesting,
    nulls, and the streamed forms (``$?`` with ``;`` chunks, ``*?``/``%?``/``~?``/``>?`` ended by ``.``).
    Resumable: state is a stack of elements still expected per open aggregate.
    """

    def __init__(self) -> None:
        self._buf = bytearray()
        self._start = 0
        self._pos = 0
        self._need = 0
        self._stack: list[list[int]] = []  # [elements left (-1: streamed), 1 if an attribute]
        self._kind: int | None = None
        self._chunked = False  # inside a streamed string ($?)

    def feed(self, data: bytes) -> list[tuple[bytes, str]]:
        buf = self._buf
        buf += data
        out: list[tuple[bytes, str]] = []
        if len(buf) >= self._need:
            self._need = 0
            self._scan(buf, out)
        if self._start:
            del buf[: self._start]
            self._pos -= self._start
            if self._need:
                self._need -= self._start
            self._start = 0
        return out

    @property
    def pending(self) -> int:
        """Bytes received that do not complete a value yet."""
        return len(self._buf) - self._start

    def take_rest(self) -> bytes:
        """The bytes not returned as values yet; the scanner starts afresh after them."""
        rest = bytes(self._buf[self._start :])
        self._buf.clear()
        self._start = self._pos = self._need = 0
        self._stack.clear()
        self._kind = None
        self._chunked = False
        return rest

    def _scan(self, buf: bytearray, out: list[tuple[bytes, str]]) -> None:
        while self._pos < len(buf):
            pos = self._pos
            eol = buf.find(b"\r\n", pos)
            if eol < 0:
                return
            t = buf[pos]
            head = buf[pos + 1 : eol]
            nxt = eol + 2
            if self._kind is None and not self._stack and t != 0x7C:  # '|'
                self._kind = t
            if self._chunked:
                if t != 0x3B:  # ';'
                    raise ProtocolError(f"expected a string chunk, got {bytes(buf[pos:eol])[:40]!r}")
                n = _int(head)
                if n == 0:
                    self._pos = nxt
                    self._chunked = False
                    done = self._element()
                else:
                    if not self._blob(buf, nxt, n):
                        return
                    continue
            elif t in _LINE_TYPES:
                if t == 0x3A:  # ':'
                    _int(head)
                self._pos = nxt
                done = self._element()
            elif t in _BLOB_TYPES:
                if head == b"?" and t == 0x24:
                    self._pos = nxt
                    self._chunked = True
                    continue
                n = _int(head)
                if n < 0:  # RESP2 null bulk string
                    self._pos = nxt
                    done = self._element()
                else:
                    if not self._blob(buf, nxt, n):
                        return
                    done = self._element()
            elif t in _AGGREGATES or t in (0x25, 0x7C):  # '%' map, '|' attribute
                self._pos = nxt
                if head == b"?":
                    if t == 0x7C:
                        raise ProtocolError("streamed attribute")
                    self._stack.append([-1, 0])
                    continue
                n = _int(head)
                if t in (0x25, 0x7C):
                    n *= 2
                if n > 0:
                    self._stack.append([n, int(t == 0x7C)])
                    continue
                if t == 0x7C:  # an empty attribute: still waiting for its value
                    continue
                done = self._element()  # empty or null (*-1) aggregate
            elif t == 0x2E:  # '.': end of a streamed aggregate
                if not self._stack or self._stack[-1][0] != -1:
                    raise ProtocolError("'.' outside a streamed aggregate")
                self._pos = nxt
                self._stack.pop()
                done = self._element()
            else:
                raise ProtocolError(f"unknown RESP type byte {bytes([t])!r}")
            if done:
                kind = chr(self._kind) if self._kind is not None else "?"
                out.append((bytes(buf[self._start : self._pos]), kind))
                self._start = self._pos
                self._kind = None

    def _blob(self, buf: bytearray, start: int, n: int) -> bool:
        end = start + n
        if len(buf) < end + 2:
            self._need = end + 2
            return False
        if buf[end : end + 2] != b"\r\n":
            raise ProtocolError("blob not terminated by CRLF")
        self._pos = end + 2
        return True

    def _element(self) -> bool:
        """One element completed: close the aggregates it completes; True when a top-level value is."""
        stack = self._stack
        while stack:
            frame = stack[-1]
            if frame[0] < 0:  # streamed: only '.' closes it
                return False
            frame[0] -= 1
            if frame[0]:
                return False
            stack.pop()
            if frame[1]:  # an attribute: the value it describes is still to come
                return False
        return True


# ------------------------------------------------------------------------------------------ matching


@dataclass(frozen=True)
class Command:
    """One parsed command: ``name`` upper-cased, ``args`` the rest of its argv, as bytes."""

    name: str
    args: tuple[bytes, ...]

    @classmethod
    def from_argv(cls, argv: list[bytes]) -> Command:
        return cls(argv[0].decode("latin-1").upper(), tuple(argv[1:]))

    @property
    def first(self) -> bytes | None:
        return self.args[0] if self.args else None

    @property
    def subcommand(self) -> str | None:
        return self.args[0].decode("latin-1").upper() if self.args else None

    @property
    def script_sha(self) -> str | None:
        """The sha of the script an EVAL/EVALSHA (or its _RO form) runs, else None."""
        if not self.args:
            return None
        if self.name in ("EVALSHA", "EVALSHA_RO"):
            return self.args[0].decode("latin-1").lower()
        if self.name in ("EVAL", "EVAL_RO"):
            return sha1_of(self.args[0])
        return None

    def contains(self, needle: str | bytes) -> bool:
        raw = needle.encode() if isinstance(needle, str) else needle
        return any(raw in arg for arg in self.args)

    def __str__(self) -> str:
        first = f" {_text(self.first)}" if self.first is not None else ""
        return f"{self.name}{first}"


def _text(arg: bytes | None) -> str | None:
    return None if arg is None else arg[:_LOG_ARG].decode("utf-8", "replace")


def _sha(script: str | bytes) -> str:
    text = script.decode("latin-1") if isinstance(script, bytes) else script
    if len(text) == 40 and all(c in "0123456789abcdefABCDEF" for c in text):
        return text.lower()
    return sha1_of(script)


def _name_test(match: str) -> Callable[[Command], bool]:
    words = match.upper().split()
    if not words:
        raise ValueError("empty command name")
    name, sub = words[0], (words[1] if len(words) > 1 else None)
    return lambda c: c.name == name and (sub is None or c.subcommand == sub)


def command_matcher(
    match: Match = None, *, contains: str | bytes | None = None, script: str | bytes | None = None
) -> Callable[[Command], bool]:
    """A predicate on :class:`Command`.

    :param match: ``None`` or ``"*"`` (any command), a name (``"EVALSHA"``), a name and subcommand
        (``"SCRIPT LOAD"``, ``"CLIENT SETINFO"``), case-insensitive; several of those (a tuple or
        list: any of them); or a callable taking a Command.
    :param contains: a substring one of the arguments must contain.
    :param script: an EVAL/EVALSHA/EVAL_RO/EVALSHA_RO of this script: its sha (40 hex digits) or source.
    """
    tests: list[Callable[[Command], bool]] = []
    if callable(match):
        tests.append(match)
    elif isinstance(match, str):
        if match.strip() != "*":
            tests.append(_name_test(match))
    elif match is not None:  # several names: any of them
        alternatives = [_name_test(name) for name in match]
        tests.append(lambda c: any(test(c) for test in alternatives))
    if contains is not None:
        tests.append(lambda c: c.contains(contains))
    if script is not None:
        sha = _sha(script)
        tests.append(lambda c: c.script_sha == sha)
    return lambda c: all(test(c) for test in tests)


class Fault:
    """One armed fault, as returned by ``drop_reply`` / ``drop_request``.

    ``hits`` counts the commands it acted on (``commands`` lists them); ``wait()`` blocks until it
    acted ``count`` times. A drop_reply hit means Redis answered the command (it took effect) and the
    answer was discarded.
    """

    def __init__(
        self, kind: str, predicate: Callable[[Command], bool], count: int, then: Then, skip_errors: bool
    ) -> None:
        if count < 1:
            raise ValueError("count must be >= 1")
        if then not in ("close", "hang"):
            raise ValueError(f"then must be 'close' or 'hang', not {then!r}")
        self.kind = kind
        self.predicate = predicate
        self.count = count
        self.then: Then = then
        self.skip_errors = skip_errors
        self.hits = 0
        self.commands: list[Command] = []
        self.cancelled = False
        self._done = threading.Event()

    @property
    def remaining(self) -> int:
        return 0 if self.cancelled else self.count - self.hits

    def wait(self, timeout: float = 10.0) -> bool:
        """True once the fault acted ``count`` times (False on timeout)."""
        return self._done.wait(timeout)

    def cancel(self) -> None:
        self.cancelled = True

    def _hit(self, command: Command) -> None:
        self.hits += 1
        self.commands.append(command)
        if self.hits >= self.count:
            self._done.set()

    def __repr__(self) -> str:
        return f"<Fault {self.kind} then={self.then} hits={self.hits}/{self.count}>"


# ----------------------------------------------------------------------------------------- the proxy


@dataclass
class _Pending:
    command: Command | None
    queued: bool = False  # inside MULTI: the reply is +QUEUED
    passthrough: bool = False  # from its reply on, the connection is no longer paired


class _Pair:
    def __init__(self, ident: int, client: socket.socket, upstream: socket.socket) -> None:
        self.id = ident
        self.client = client
        self.upstream = upstream
        self.to_client = bytearray()
        self.to_upstream = bytearray()
        self.requests = RequestParser()
        self.replies = ReplyScanner()
        self.pending: deque[_Pending] = deque()
        self.passthrough = False
        self.in_multi = False
        self.read_client = True
        self.read_upstream = True
        self.blackhole = False  # client bytes read and discarded (a hung connection)
        self.hung = False  # server bytes read and discarded
        self.close_when: str | None = None  # "flushed": once to_client is sent; "drained": once all replies are
        self.deadline: float | None = None
        self.closed = False

    def close_soon(self, when: str) -> None:
        self.close_when = when
        self.deadline = time.monotonic() + _LINGER


class _Thaw:
    """What ``freeze()`` returns: ``with proxy.freeze(): ...`` thaws on leaving the block."""

    def __init__(self, proxy: RedisProxy) -> None:
        self._proxy = proxy

    def __enter__(self) -> _Thaw:
        return self

    def __exit__(self, *exc: object) -> None:
        self._proxy.thaw()


_NEXT, _STOP, _UNPAIRED = 0, 1, 2
_LISTENER = object()
_WAKER = object()
_CLIENT, _UPSTREAM = 0, 1


class RedisProxy:
    """A RESP-aware TCP proxy in front of the Redis at ``upstream_host:upstream_port``.

    Use as a context manager (or ``start()`` / ``close()``); clients connect to ``.url``. All control
    methods may be called from any thread; each takes effect before it returns.
    """

    def __init__(
        self,
        upstream_port: int,
        upstream_host: str = "127.0.0.1",
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        db: int = 0,
        keep_log: bool = True,
        log_size: int = 100_000,
    ) -> None:
        self.upstream = (upstream_host, upstream_port)
        self.host = host
        self.db = db
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind((host, port))
        self._listener.listen(128)
        self._listener.setblocking(False)
        self.port: int = self._listener.getsockname()[1]
        self._waker_r, self._waker_w = socket.socketpair()
        self._waker_r.setblocking(False)
        self._waker_w.setblocking(False)
        self._sel = selectors.DefaultSelector()
        self._masks: dict[socket.socket, int] = {}
        self._pairs: dict[int, _Pair] = {}
        self._next_id = 0
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._faults: list[Fault] = []
        self._counts: Counter[str] = Counter()
        self._log: deque[tuple[str, str | None]] | None = deque(maxlen=log_size) if keep_log else None
        self._calls: deque[tuple[Callable[[], object], threading.Event, dict[str, object]]] = deque()
        self._frozen = False
        self._thaw_at: float | None = None
        self._refusing = False
        self._refuse_reset = False
        self._thread: threading.Thread | None = None
        self._stopping = False
        self._finished = False
        #: Connections accepted (including refused ones), refused, and failed to reach Redis.
        self.accepted = 0
        self.refused = 0
        self.upstream_failures = 0
        #: Anything unexpected the loop met (a protocol error, a failing predicate): tests assert it empty.
        self.errors: list[str] = []

    # ------------------------------------------------------------------------------------ lifecycle

    @property
    def url(self) -> str:
        return f"redis://{self.host}:{self.port}/{self.db}"

    def start(self) -> RedisProxy:
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name=f"redis-proxy-{self.port}", daemon=True)
            self._thread.start()
        return self

    def close(self) -> None:
        """Close the listener and every connection, and end the thread."""
        self._stopping = True
        if self._thread is not None and self._thread.is_alive():
            self._wake()
            self._thread.join(10)
        if not self._finished:
            self._shutdown()

    def __enter__(self) -> RedisProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -------------------------------------------------------------------------------------- faults

    def drop_reply(
        self,
        match: Match = None,
        count: int = 1,
        *,
        contains: str | bytes | None = None,
        script: str | bytes | None = None,
        then: Then = "close",
        skip_errors: bool = False,
    ) -> Fault:
        """Forward the next ``count`` matching commands, discard their replies, then close the
        connection (``then="close"``: the client sees it closed, after the replies before) or leave it
        silent (``"hang"``: nothing more is forwarded either way; the client times out).

        A NOSCRIPT error reply never counts (the client loads the script and calls again); with
        ``skip_errors`` no error reply does.
        """
        fault = Fault("drop_reply", command_matcher(match, contains=contains, script=script), count, then, skip_errors)
        with self._lock:
            self._faults.append(fault)
        return fault

    def drop_request(
        self,
        match: Match = None,
        count: int = 1,
        *,
        contains: str | bytes | None = None,
        script: str | bytes | None = None,
        then: Then = "close",
    ) -> Fault:
        """Do not forward the next ``count`` matching commands (nor anything after them on their
        connection); close the connection once the commands before have been answered
        (``then="close"``) or leave it silent (``"hang"``)."""
        fault = Fault("drop_request", command_matcher(match, contains=contains, script=script), count, then, False)
        with self._lock:
            self._faults.append(fault)
        return fault

    def clear(self) -> None:
        """Cancel every armed fault."""
        with self._lock:
            for fault in self._faults:
                fault.cancel()
            self._faults.clear()

    def freeze(self, seconds: float | None = None) -> _Thaw:
        """Stop forwarding in both directions (and accepting) until ``thaw()`` or for ``seconds``.

        Connections stay open; bytes in flight are held, and delivered on thaw.
        """

        def do() -> None:
            self._frozen = True
            self._thaw_at = None if seconds is None else time.monotonic() + seconds

        self._call(do)
        return _Thaw(self)

    def thaw(self) -> None:
        def do() -> None:
            self._frozen = False
            self._thaw_at = None

        self._call(do)

    @property
    def frozen(self) -> bool:
        return self._frozen

    def cut(self, *, reset: bool = False) -> int:
        """Close every open connection now (``reset``: with a TCP RST); return how many."""

        def do() -> int:
            pairs = list(self._pairs.values())
            for pair in pairs:
                self._close_pair(pair, reset=reset)
            return len(pairs)

        return int(self._call(do))  # type: ignore[call-overload]

    def refuse(self, on: bool = True, *, reset: bool = False) -> None:
        """While on, close every new connection as soon as it is accepted (``reset``: with a RST)."""

        def do() -> None:
            self._refusing = on
            self._refuse_reset = reset

        self._call(do)

    # --------------------------------------------------------------------------------- observation

    @property
    def counts(self) -> Counter[str]:
        """Commands forwarded to Redis, by name (a copy)."""
        with self._lock:
            return Counter(self._counts)

    @property
    def log(self) -> list[tuple[str, str | None]]:
        """``(name, first argument)`` of every command forwarded to Redis, in order (a copy)."""
        with self._lock:
            return list(self._log or ())

    @property
    def connections(self) -> int:
        """Connections open now."""
        return len(self._pairs)

    def reset_counts(self) -> None:
        with self._lock:
            self._counts.clear()
            if self._log is not None:
                self._log.clear()

    def wait_count(self, name: str, at_least: int = 1, timeout: float = 10.0) -> bool:
        """Wait until ``at_least`` commands called ``name`` were forwarded; False on timeout."""
        name = name.upper()
        with self._cond:
            return self._cond.wait_for(lambda: self._counts[name] >= at_least, timeout)

    # ------------------------------------------------------------------------------ control plumbing

    def _wake(self) -> None:
        try:
            self._waker_w.send(b"x")
        except (BlockingIOError, OSError):
            pass  # already awake (buffer full) or shut down

    def _call(self, fn: Callable[[], object]) -> object:
        """Run ``fn`` on the loop thread (between two rounds of I/O) and return its result."""
        thread = self._thread
        if thread is None or not thread.is_alive() or thread is threading.current_thread():
            return fn()
        done = threading.Event()
        box: dict[str, object] = {}
        self._calls.append((fn, done, box))
        self._wake()
        if not done.wait(10):
            raise RuntimeError("the proxy loop did not answer within 10 s")
        if "error" in box:
            raise box["error"]  # type: ignore[misc]
        return box.get("result")

    def _run_calls(self) -> None:
        while self._calls:
            fn, done, box = self._calls.popleft()
            try:
                box["result"] = fn()
            except BaseException as exc:
                box["error"] = exc
            done.set()

    def _error(self, message: str) -> None:
        with self._lock:
            self.errors.append(message)

    # ---------------------------------------------------------------------------------------- loop

    def _loop(self) -> None:
        try:
            self._sel.register(self._waker_r, selectors.EVENT_READ, _WAKER)
            while not self._stopping:
                self._refresh()
                for key, mask in self._sel.select(self._timeout()):
                    if key.data is _LISTENER:
                        self._accept()
                    elif key.data is _WAKER:
                        self._drain_waker()
                    else:
                        pair, side = key.data
                        if pair.closed:
                            continue
                        try:
                            self._service(pair, side, mask)
                        except Exception as exc:
                            self._error(f"connection {pair.id}: {exc!r}")
                            self._close_pair(pair)
                self._run_calls()
                self._tick()
        except BaseException as exc:  # never an unhandled exception in a thread: pytest would fail on it
            self._error(f"proxy loop died: {exc!r}")
        finally:
            self._shutdown()

    def _shutdown(self) -> None:
        self._finished = True
        for pair in list(self._pairs.values()):
            self._close_pair(pair)
        for sock in list(self._masks):
            self._unregister(sock)
        for sock in (self._listener, self._waker_r, self._waker_w):
            sock.close()
        self._sel.close()
        while self._calls:  # anyone still waiting gets an answer
            fn, done, box = self._calls.popleft()
            try:
                box["result"] = fn()
            except BaseException as exc:
                box["error"] = exc
            done.set()

    def _drain_waker(self) -> None:
        try:
            while self._waker_r.recv(4096):
                pass
        except (BlockingIOError, OSError):
            pass

    def _timeout(self) -> float | None:
        # Frozen, nothing closes: only the thaw can be due (else an overdue close would spin the loop).
        deadlines = [] if self._frozen else [p.deadline for p in self._pairs.values() if p.deadline is not None]
        if self._thaw_at is not None:
            deadlines.append(self._thaw_at)
        if not deadlines:
            return None
        return max(0.0, min(deadlines) - time.monotonic())

    def _tick(self) -> None:
        now = time.monotonic()
        if self._thaw_at is not None and now >= self._thaw_at:
            self._frozen = False
            self._thaw_at = None
        if self._frozen:
            return
        for pair in list(self._pairs.values()):
            if pair.close_when is None:
                continue
            flushed = not pair.to_client
            if pair.close_when == "drained":
                flushed = flushed and not pair.pending and not pair.to_upstream
            if flushed or (pair.deadline is not None and now >= pair.deadline):
                self._close_pair(pair)

    def _refresh(self) -> None:
        """Register each socket for exactly what it should do now (nothing while frozen)."""
        frozen = self._frozen
        self._set_mask(self._listener, 0 if frozen else selectors.EVENT_READ, _LISTENER)
        for pair in self._pairs.values():
            client = upstream = 0
            if not frozen:
                if (pair.read_client or pair.blackhole) and len(pair.to_upstream) < _HIGH_WATER:
                    client |= selectors.EVENT_READ
                if pair.to_client:
                    client |= selectors.EVENT_WRITE
                if pair.read_upstream and len(pair.to_client) < _HIGH_WATER:
                    upstream |= selectors.EVENT_READ
                if pair.to_upstream:
                    upstream |= selectors.EVENT_WRITE
            self._set_mask(pair.client, client, (pair, _CLIENT))
            self._set_mask(pair.upstream, upstream, (pair, _UPSTREAM))

    def _set_mask(self, sock: socket.socket, mask: int, data: object) -> None:
        current = self._masks.get(sock, 0)
        if mask == current:
            return
        if not mask:
            self._unregister(sock)
        elif not current:
            self._sel.register(sock, mask, data)
            self._masks[sock] = mask
        else:
            self._sel.modify(sock, mask, data)
            self._masks[sock] = mask

    def _unregister(self, sock: socket.socket) -> None:
        if self._masks.pop(sock, 0):
            try:
                self._sel.unregister(sock)
            except (KeyError, ValueError, OSError):
                pass

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                self._error(f"accept: {exc!r}")
                return
            self.accepted += 1
            if self._refusing:
                self.refused += 1
                _close(client, reset=self._refuse_reset)
                continue
            try:
                upstream = socket.create_connection(self.upstream, timeout=2)
            except OSError:
                self.upstream_failures += 1
                _close(client)
                continue
            for sock in (client, upstream):
                sock.setblocking(False)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._next_id += 1
            self._pairs[self._next_id] = _Pair(self._next_id, client, upstream)

    def _close_pair(self, pair: _Pair, *, reset: bool = False) -> None:
        if pair.closed:
            return
        pair.closed = True
        self._pairs.pop(pair.id, None)
        for sock in (pair.client, pair.upstream):
            self._unregister(sock)
            _close(sock, reset=reset)

    def _service(self, pair: _Pair, side: int, mask: int) -> None:
        if mask & selectors.EVENT_WRITE:
            self._flush(pair, side)
        if mask & selectors.EVENT_READ and not pair.closed:
            if side == _CLIENT:
                self._read_client(pair)
            else:
                self._read_upstream(pair)

    def _flush(self, pair: _Pair, side: int) -> None:
        if self._frozen or pair.closed:
            return
        buf, sock = (pair.to_client, pair.client) if side == _CLIENT else (pair.to_upstream, pair.upstream)
        while buf:
            try:
                sent = sock.send(buf)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                self._close_pair(pair)
                return
            del buf[:sent]

    def _recv(self, sock: socket.socket) -> bytes | None:
        try:
            return sock.recv(_CHUNK)
        except (BlockingIOError, InterruptedError):
            return None
        except OSError:
            return b""

    def _read_client(self, pair: _Pair) -> None:
        data = self._recv(pair.client)
        if data is None:
            return
        if not data:  # the client went away
            self._close_pair(pair)
            return
        if pair.blackhole or not pair.read_client:
            return
        for argv, raw in pair.requests.feed(data):
            if not self._on_request(pair, argv, raw):
                break
        self._flush(pair, _UPSTREAM)

    def _on_request(self, pair: _Pair, argv: list[bytes], raw: bytes) -> bool:
        if not argv:  # an empty command: Redis answers nothing
            pair.to_upstream += raw
            return True
        command = Command.from_argv(argv)
        fault = self._take("drop_request", command, None)
        if fault is not None:
            if fault.then == "close":
                pair.read_client = False
                pair.close_soon("drained")
            else:
                pair.blackhole = True
            return False
        name = command.name
        queued = pair.in_multi and name not in ("EXEC", "DISCARD", "MULTI")
        if name == "MULTI":
            pair.in_multi = True
        elif name in ("EXEC", "DISCARD", "RESET"):
            pair.in_multi = False
        passthrough = name in _SUBSCRIBING or (
            name == "CLIENT"
            and command.subcommand == "REPLY"
            and len(command.args) > 1
            and command.args[1].upper() in (b"OFF", b"SKIP")
        )
        pair.to_upstream += raw
        if not pair.passthrough:
            pair.pending.append(_Pending(command, queued, passthrough))
        with self._cond:
            self._counts[name] += 1
            if self._log is not None:
                self._log.append((name, _text(command.first)))
            self._cond.notify_all()
        return True

    def _read_upstream(self, pair: _Pair) -> None:
        data = self._recv(pair.upstream)
        if data is None:
            return
        if not data:  # Redis closed the connection: deliver what it said, then close the client
            pair.read_upstream = pair.read_client = False
            pair.close_soon("flushed")
            return
        if pair.hung:
            return
        if pair.passthrough:
            pair.to_client += data
        else:
            replies = pair.replies.feed(data)
            for i, (raw, kind) in enumerate(replies):
                outcome = self._on_reply(pair, raw, kind)
                if outcome == _STOP:  # a dropped reply: nothing after it goes to this client
                    break
                if outcome == _UNPAIRED:  # whatever followed goes out as it comes from now on
                    for rest, _ in replies[i + 1 :]:
                        pair.to_client += rest
                    pair.to_client += pair.replies.take_rest()
                    break
        self._flush(pair, _CLIENT)

    def _on_reply(self, pair: _Pair, raw: bytes, kind: str) -> int:
        if not pair.pending:  # unsolicited (an error before Redis closes the connection, say)
            pair.to_client += raw
            return _NEXT
        head = pair.pending[0]
        if kind == ">" and not head.passthrough:  # a RESP3 push: out of band
            pair.to_client += raw
            return _NEXT
        pair.pending.popleft()
        if head.passthrough:
            pair.passthrough = True
            pair.pending.clear()
            pair.to_client += raw
            return _UNPAIRED
        if head.command is not None and not head.queued:
            fault = self._take("drop_reply", head.command, (raw, kind))
            if fault is not None:
                if fault.then == "close":
                    pair.read_client = pair.read_upstream = False
                    pair.close_soon("flushed")
                else:
                    pair.hung = pair.blackhole = True
                return _STOP
        pair.to_client += raw
        return _NEXT

    def _take(self, kind: str, command: Command, reply: tuple[bytes, str] | None) -> Fault | None:
        """The first armed fault of ``kind`` matching ``command`` (and its reply), its hit recorded."""
        with self._lock:
            faults = [f for f in self._faults if f.kind == kind and f.remaining > 0]
        for fault in faults:
            try:
                if not fault.predicate(command):
                    continue
            except Exception as exc:
                self._error(f"match predicate failed on {command}: {exc!r}")
                continue
            if reply is not None and reply[1] in ERROR_KINDS and (fault.skip_errors or b"NOSCRIPT" in reply[0][:32]):
                continue
            with self._lock:
                if fault.remaining <= 0:
                    continue
                fault._hit(command)
                if fault.remaining <= 0 and fault in self._faults:
                    self._faults.remove(fault)
            return fault
        return None


def _close(sock: socket.socket, *, reset: bool = False) -> None:
    try:
        if reset:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.close()
    except OSError:
        pass
