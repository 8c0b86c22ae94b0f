"""Send messages through the Cloud API, as 360dialog exposes it or as Meta does, sync or async.

::

    from wa_middleware.messaging import Client, Dialog360

    with Client(Dialog360("<channel api key>")) as client:
        result = client.send_text("4915112345678", "Hello!")
        print(result.message_id)          # the wamid whose statuses arrive on the webhook

Several numbers: ``Client({"<phone number id>": "<its 360dialog key>", ...})`` (or Meta
endpoints, or a callable) and ``phone_number_id=`` on each call picks the number.

Every call is retried on 429, 5xx, Meta's throttling codes and connections that failed to open,
with exponential backoff honouring ``Retry-After``, within one time budget (`Retry`); any other
4xx raises `ApiError` at once, marked not retryable. A send that may have reached the API (a read
timeout, a dropped connection) is never re-sent by the client: it raises `TransportError` with
``maybe_sent`` set, and deciding is left to the caller (a callback's `Replies` and the worker).

Both classes are thin: URLs, bodies and the meaning of answers come from ``_wire`` (sans-IO),
the retry decision from `Attempts`, so the two cannot drift apart.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import threading
import time
from collections.abc import Awaitable, Mapping, Sequence
from pathlib import Path
from typing import IO, Any, Generic, TypeVar, Union

import httpx

from .._version import __version__
from . import _wire
from ._wire import Call
from .endpoints import Credentials, CredentialsSource, Endpoint
from .errors import ApiError, MessagingError, RateLimited, TransportError
from .ratelimit import AsyncRateLimiter, RateLimiter
from .retry import Attempts, Retry
from .types import (
    Audio,
    Body,
    Button,
    ButtonsAction,
    Component,
    ContactCard,
    Contacts,
    Content,
    CtaUrlAction,
    CtaUrlParameters,
    Document,
    FlowAction,
    FlowActionPayload,
    FlowParameters,
    Footer,
    Header,
    Image,
    Interactive,
    Language,
    ListAction,
    ListSection,
    Location,
    MediaInfo,
    Reaction,
    ReplyButton,
    SendResult,
    Sticker,
    Template,
    Text,
    Video,
    message_request,
)

__all__ = ["AsyncClient", "Client"]

logger = logging.getLogger("wa_middleware.messaging")

R = TypeVar("R")
#: A file to upload: its bytes, a binary file object, or a path.
Upload = Union[bytes, IO[bytes], "os.PathLike[str]"]
_USER_AGENT = f"wa-middleware/{__version__}"
#: Failures after which the request cannot have reached the server: safe to try again.
_NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout, httpx.UnsupportedProtocol)


def _header(header: Header | str | None) -> Header | None:
    return Header(type="text", text=header) if isinstance(header, str) else header


def _footer(footer: str | None) -> Footer | None:
    return Footer(text=footer) if footer is not None else None


def _button(button: ReplyButton | tuple[str, str]) -> Button:
    return Button(reply=button if isinstance(button, ReplyButton) else ReplyButton(id=button[0], title=button[1]))


class _Contents(Generic[R]):
    """The ``send_<kind>`` conveniences, shared by both clients: each builds a content and calls `send`."""

    def send(
        self,
        to: str,
        content: Content,
        *,
        reply_to: str | None = None,
        phone_number_id: str | None = None,
        budget: float | None = None,
    ) -> R:
        raise NotImplementedError

    def send_text(
        self,
        to: str,
        body: str,
        *,
        preview_url: bool | None = None,
        reply_to: str | None = None,
        phone_number_id: str | None = None,
    ) -> R:
        """A text message; ``preview_url=True`` shows a preview of the first link in ``body``."""
        return self.send(
            to, Text(body=body, preview_url=preview_url), reply_to=reply_to, phone_number_id=phone_number_id
        )

    def send_template(
        self,
        to: str,
        name: str,
        language: str | Language,
        components: Sequence[Component] | None = None,
        *,
        reply_to: str | None = None,
        phone_number_id: str | None = None,
    ) -> R:
        """A template message (the only kind allowed outside the 24-hour customer service window)."""
        lang = Language(code=language) if isinstance(language, str) else language
        content = Template(name=name, language=lang, components=components or None)
        return self.send(to, content, reply_to=reply_to, phone_number_id=phone_number_id)

    def send_image(
        self,
        to: str,
        *,
        media_id: str | None = None,
        link: str | None = None,
        caption: str | None = None,
        reply_to: str | None = None,
        phone_number_id: str | None = None,
    ) -> R:
        """An image, by the id of an uploaded file or by an HTTPS link (exactly one of the two)."""
        content = Image(id=media_id, link=link, caption=caption)
        return self.send(to, content, reply_to=reply_to, phone_number_id=phone_number_id)

    def send_video(
        self,
        to: str,
        *,
        media_id: str | None = None,
        link: str | None = None,
        caption: str | None = None,
        reply_to: str | None = None,
        phone_number_id: str | None = None,
    ) -> R:
        content = Video(id=media_id, link=link, caption=caption)
        return self.send(to, content, reply_to=reply_to, phone_number_id=phone_number_id)

    def send_audio(
        self,
        to: str,
        *,
        media_id: str | None = None,
        link: str | None = None,
        reply_to: str | None = None,
        phone_number_id: str | None = None,
    ) -> R:
        return self.send(to, Audio(id=media_id, link=link), reply_to=reply_to, phone_number_id=phone_number_id)

    def send_document(
        self,
        to: str,
        *,
        media_id: str | None = None,
        link: str | None = None,
        caption: str | None = None,
        filename: str | None = None,
        reply_to: str | None = None,
        phone_number_id: str | None = None,
    ) -> R:
        content = Document(id=media_id, link=link, caption=caption, filename=filename)
        return self.send(to, content, reply_to=reply_to, phone_number_id=phone_number_id)

    def send_sticker(
        self,
        to: str,
        *,
        media_id: str | None = None,
        link: str | None = None,
        reply_to: str | None = None,
        phone_number_id: str | None = None,
    ) -> R:
        return self.send(to, Sticker(id=media_id, link=link), reply_to=reply_to, phone_number_id=phone_number_id)

    def send_interactive_buttons(
        self,
        to: str,
        body: str,
        buttons: Sequence[ReplyButton | tuple[str, str]],
        *,
        header: Header | str | None = None,
        footer: str | None = None,
        reply_to: str | None = None,
        phone_number_id: str | None = None,
    ) -> R:
        """Up to three reply buttons, each ``(id, title)`` or a `ReplyButton`; a tap arrives as a
        message whose ``reply_id`` is the button's id."""
        content = Interactive(
            type="button",
            body=Body(text=body),
            header=_header(header),
            footer=_footer(footer),
            action=ButtonsAction(buttons=[_button(b) for b in buttons]),
        )
        return self.send(to, content, reply_to=reply_to, phone_number_id=phone_number_id)

    def send_interactive_list(
        self,
        to: str,
        body: str,
        button: str,
        sections: Sequence[ListSection],
        *,
        header: str | None = None,
        footer: str | None = None,
        reply_to: str | None = None,
        phone_number_id: str | None = None,
    ) -> R:
        """A list: ``button`` is the label that opens it; up to ten rows in all."""
        content = Interactive(
            type="list",
            body=Body(text=body),
            header=_header(header),
            footer=_footer(footer),
            action=ListAction(button=button, sections=sections),
        )
        return self.send(to, content, reply_to=reply_to, phone_number_id=phone_number_id)

    def send_interactive_cta_url(
        self,
        to: str,
        body: str,
        display_text: str,
        url: str,
        *,
        header: Header | str | None = None,
        footer: str | None = None,
        reply_to: str | None = None,
        phone_number_id: str | None = None,
    ) -> R:
        """A button that opens ``url``."""
        content = Interactive(
            type="cta_url",
            body=Body(text=body),
            header=_header(header),
            footer=_footer(footer),
            action=CtaUrlAction(parameters=CtaUrlParameters(display_text=display_text, url=url)),
        )
        return self.send(to, content, reply_to=reply_to, phone_number_id=phone_number_id)

    def send_interactive_flow(
        self,
        to: str,
        body: str,
        *,
        flow_cta: str,
        flow_id: str | None = None,
        flow_name: str | None = None,
        flow_token: str | None = None,
        screen: str | None = None,
        data: Mapping[str, Any] | None = None,
        flow_action: str | None = None,
        mode: str | None = None,
        flow_message_version: str = "3",
        header: Header | str | None = None,
        footer: str | None = None,
        reply_to: str | None = None,
        phone_number_id: str | None = None,
    ) -> R:
        """A WhatsApp Flow, by ``flow_id`` or ``flow_name``; with ``screen``, it opens there
        (``flow_action="navigate"``), passing ``data``. ``mode="draft"`` sends an unpublished flow."""
        if (flow_id is None) == (flow_name is None):
            raise ValueError("a flow message takes exactly one of flow_id= and flow_name=")
        payload = FlowActionPayload(screen=screen, data=data) if screen is not None else None
        parameters = FlowParameters(
            flow_message_version=flow_message_version,
            flow_cta=flow_cta,
            flow_id=flow_id,
            flow_name=flow_name,
            flow_token=flow_token,
            flow_action=flow_action or ("navigate" if payload is not None else None),
            flow_action_payload=payload,
            mode=mode,
        )
        content = Interactive(
            type="flow",
            body=Body(text=body),
            header=_header(header),
            footer=_footer(footer),
            action=FlowAction(parameters=parameters),
        )
        return self.send(to, content, reply_to=reply_to, phone_number_id=phone_number_id)

    def send_location(
        self,
        to: str,
        latitude: float,
        longitude: float,
        *,
        name: str | None = None,
        address: str | None = None,
        reply_to: str | None = None,
        phone_number_id: str | None = None,
    ) -> R:
        content = Location(latitude=latitude, longitude=longitude, name=name, address=address)
        return self.send(to, content, reply_to=reply_to, phone_number_id=phone_number_id)

    def send_contacts(
        self,
        to: str,
        contacts: Sequence[ContactCard],
        *,
        reply_to: str | None = None,
        phone_number_id: str | None = None,
    ) -> R:
        return self.send(to, Contacts(cards=contacts), reply_to=reply_to, phone_number_id=phone_number_id)

    def send_reaction(self, to: str, message_id: str, emoji: str, *, phone_number_id: str | None = None) -> R:
        """React to ``message_id`` (a message ``to`` sent); ``emoji=""`` removes the reaction."""
        return self.send(to, Reaction(message_id=message_id, emoji=emoji), phone_number_id=phone_number_id)


class _Base(_Contents[R]):
    def __init__(
        self,
        credentials: Credentials | CredentialsSource,
        *,
        retry: Retry | None = None,
        timeout: float = 10.0,
    ) -> None:
        self.credentials = Credentials.of(credentials)
        self.retry = retry if retry is not None else Retry()
        if timeout <= 0:
            raise ValueError("timeout must be positive")
        self.timeout = timeout
        # The method that worked for media downloads, per host: 360dialog documents two.
        self._download_methods: dict[str, str] = {}

    def _send_call(self, to: str, content: Content, reply_to: str | None, phone_number_id: str | None) -> Call:
        if not to:
            raise ValueError("a message needs a recipient (to=)")
        endpoint = self.credentials.endpoint(phone_number_id)
        limited = self._limited()
        limit_key = (phone_number_id or endpoint.limit_key) if limited else None
        return _wire.send_call(endpoint, message_request(to, content, reply_to=reply_to), limit_key=limit_key)

    def _limited(self) -> bool:
        return False

    def _download_calls(self, endpoint: Endpoint, url: str) -> list[Call]:
        methods = list(endpoint.download_methods)
        known = self._download_methods.get(endpoint.download_url(url).split("/", 3)[2])
        if known in methods:
            methods.remove(known)
            methods.insert(0, known)
        attempts = self.retry.media_attempts
        return [_wire.download_call(endpoint, url, method, attempts=attempts) for method in methods]

    def _downloaded(self, call: Call, info: MediaInfo, content: bytes) -> bytes:
        self._download_methods[call.url.split("/", 3)[2]] = call.method
        digest = (info.sha256 or "").lower()
        if len(digest) == 64 and all(c in "0123456789abcdef" for c in digest):
            if hashlib.sha256(content).hexdigest() != digest:
                raise TransportError(f"media {info.id} arrived corrupted (sha256 mismatch)", maybe_sent=False)
        return content

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.credentials!r})"


def _read(file: Upload) -> bytes:
    if isinstance(file, bytes):
        return file
    if isinstance(file, os.PathLike):
        return Path(file).read_bytes()
    return file.read()


def _transport_error(call: Call, exc: httpx.TransportError) -> TransportError:
    host = call.url.split("/", 3)[2] if "://" in call.url else call.url
    maybe_sent = not isinstance(exc, _NOT_SENT)
    return TransportError(f"no answer to {call.what} from {host}: {type(exc).__name__}: {exc}", maybe_sent=maybe_sent)


def _api_error(call: Call, response: httpx.Response) -> ApiError:
    return _wire.error_of(
        response.status_code, response.headers, response.content, phone_number_id=call.phone_number_id
    )


def _log_retry(call: Call, error: MessagingError, attempts: Attempts, delay: float) -> None:
    logger.warning(
        "api call retried",
        extra={
            "call": call.what,
            "status": getattr(error, "status", None),
            "code": getattr(error, "code", None),
            "error": type(error).__name__,
            "attempt": attempts.made,
            "delay": round(delay, 3),
            "phone_number_id": call.phone_number_id,
        },
    )


class Client(_Base[SendResult]):
    """The Cloud API client, sync (on `httpx.Client`); safe to share between threads.

    :param credentials: a `Dialog360` or `Meta` endpoint, a 360dialog key, or keys per phone
        number id (a mapping or a callable; see `Credentials`).
    :param retry: how calls are retried and the time budget of each (`Retry`).
    :param timeout: seconds for one HTTP attempt (cut to what remains of the budget).
    :param rate_limiter: a shared per-number `RateLimiter`; sends queue for its slots.
    :param http: an httpx client to use (not closed by `close`); by default one is made per process,
        lazily, so a client built before the worker forks is safe to use in its children.
    """

    def __init__(
        self,
        credentials: Credentials | CredentialsSource,
        *,
        retry: Retry | None = None,
        timeout: float = 10.0,
        rate_limiter: RateLimiter | None = None,
        http: httpx.Client | None = None,
    ) -> None:
        super().__init__(credentials, retry=retry, timeout=timeout)
        self.rate_limiter = rate_limiter
        self._given = http
        self._own: httpx.Client | None = None
        self._pid = 0
        self._lock = threading.Lock()

    def _limited(self) -> bool:
        return self.rate_limiter is not None

    def _http(self) -> httpx.Client:
        if self._given is not None:
            return self._given
        own = self._own
        if own is not None and self._pid == os.getpid():
            return own
        with self._lock:
            if self._own is None or self._pid != os.getpid():
                # A pool inherited through fork shares its sockets with the parent: start afresh.
                self._own = httpx.Client(
                    timeout=self.timeout,
                    follow_redirects=False,
                    headers={"User-Agent": _USER_AGENT},
                    limits=httpx.Limits(max_connections=64, max_keepalive_connections=32),
                )
                self._pid = os.getpid()
            return self._own

    def close(self) -> None:
        """Close the connection pool this client made (a given ``http`` client stays open)."""
        with self._lock:
            if self._own is not None and self._pid == os.getpid():
                self._own.close()
            self._own = None

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _queue(self, call: Call, attempts: Attempts) -> None:
        assert self.rate_limiter is not None and call.limit_key is not None
        allowance = attempts.queueing_allowance(self.timeout)
        wait = self.rate_limiter.reserve(call.limit_key, max_wait=allowance)
        if wait is None:
            raise RateLimited(call.limit_key, allowance)
        if wait > 0:
            time.sleep(wait)

    def _run(self, call: Call, *, budget: float | None = None) -> httpx.Response:
        attempts = Attempts(self.retry, limit=call.attempts, budget=budget)
        while True:
            if call.limit_key is not None and self.rate_limiter is not None:
                self._queue(call, attempts)
            attempts.made += 1
            error: MessagingError
            try:
                response = self._http().request(
                    call.method,
                    call.url,
                    headers=call.headers,
                    content=call.content,
                    data=call.data,
                    files=call.files,
                    timeout=attempts.timeout(self.timeout),
                    follow_redirects=call.follow_redirects,
                )
            except httpx.TransportError as exc:
                error = _transport_error(call, exc)
            else:
                if response.is_success:
                    return response
                error = _api_error(call, response)
            delay = attempts.delay_after(error, sends=call.sends)
            if delay is None:
                raise error from None
            _log_retry(call, error, attempts, delay)
            time.sleep(delay)

    def send(
        self,
        to: str,
        content: Content,
        *,
        reply_to: str | None = None,
        phone_number_id: str | None = None,
        budget: float | None = None,
    ) -> SendResult:
        """Send ``content`` to ``to``.

        :param to: the recipient's WhatsApp id or phone number.
        :param content: a `Text`, `Image`, `Template`, `Interactive`... (`wa_middleware.messaging.types`).
        :param reply_to: the wamid of the message this one answers: shown quoted above it.
        :param phone_number_id: the business number to send from (needed with keys per number).
        :param budget: seconds for this call, when less than the retry policy's budget (what remains
            of a callback's time limit).
        :raises ApiError: the API refused (``retryable`` says whether trying later may help).
        :raises TransportError: no answer (``maybe_sent``: the message may have gone out).
        :raises RateLimited: the shared rate limit has no slot within the budget.
        :raises UnknownNumber: no key for ``phone_number_id``.
        """
        call = self._send_call(to, content, reply_to, phone_number_id)
        return _wire.decode_send(self._run(call, budget=budget).content)

    def mark_read(self, message_id: str, *, typing: bool = False, phone_number_id: str | None = None) -> None:
        """Mark ``message_id`` (and the earlier messages of its chat) as read; ``typing=True`` also
        shows a typing indicator, which ends with the next message sent or after 25 seconds."""
        endpoint = self.credentials.endpoint(phone_number_id)
        self._run(_wire.read_call(endpoint, message_id, typing=typing))

    def upload_media(
        self, file: Upload, mime_type: str, *, filename: str = "file", phone_number_id: str | None = None
    ) -> str:
        """Upload a file (up to 100 MB) and return its media id, usable in sends for 30 days."""
        endpoint = self.credentials.endpoint(phone_number_id)
        call = _wire.upload_call(endpoint, _read(file), mime_type, filename, attempts=self.retry.media_attempts)
        return _wire.decode_uploaded(self._run(call).content)

    def get_media(self, media_id: str, *, phone_number_id: str | None = None) -> MediaInfo:
        """Look up a media id (of a received message, or an upload): Meta's URL (valid 5 minutes) and facts."""
        endpoint = self.credentials.endpoint(phone_number_id)
        call = _wire.media_call(endpoint, media_id, attempts=self.retry.media_attempts)
        return _wire.decode_media(self._run(call).content)

    def delete_media(self, media_id: str, *, phone_number_id: str | None = None) -> None:
        endpoint = self.credentials.endpoint(phone_number_id)
        self._run(_wire.media_call(endpoint, media_id, attempts=self.retry.media_attempts, method="DELETE"))

    def download_media(self, media: str | MediaInfo, *, phone_number_id: str | None = None) -> bytes:
        """The bytes of a media: by id (looked up first) or from a `MediaInfo` fetched less than 5 minutes ago.

        Through 360dialog, Meta's URL is fetched on 360dialog's host (its path and query, with the
        channel key); through Meta, as is, with the token. The content is checked against the
        look-up's ``sha256``.
        """
        info = media if isinstance(media, MediaInfo) else self.get_media(media, phone_number_id=phone_number_id)
        endpoint = self.credentials.endpoint(phone_number_id)
        calls = self._download_calls(endpoint, info.url)
        for i, call in enumerate(calls):
            try:
                response = self._run(call)
            except ApiError as exc:
                if exc.status == 405 and i + 1 < len(calls):
                    continue
                raise
            return self._downloaded(call, info, response.content)
        raise AssertionError("unreachable")  # pragma: no cover


class AsyncClient(_Base[Awaitable[SendResult]]):
    """The Cloud API client, async (on `httpx.AsyncClient`); the same calls as `Client`, awaited.

    Its connection pool belongs to the event loop that first uses it: share it within one loop.

    :param rate_limiter: a shared per-number `AsyncRateLimiter`.
    :param http: an ``httpx.AsyncClient`` to use (not closed by `aclose`).
    """

    def __init__(
        self,
        credentials: Credentials | CredentialsSource,
        *,
        retry: Retry | None = None,
        timeout: float = 10.0,
        rate_limiter: AsyncRateLimiter | None = None,
        http: httpx.AsyncClient | None = None,
    ) -> None:
        super().__init__(credentials, retry=retry, timeout=timeout)
        self.rate_limiter = rate_limiter
        self._given = http
        self._own: httpx.AsyncClient | None = None

    def _limited(self) -> bool:
        return self.rate_limiter is not None

    def _http(self) -> httpx.AsyncClient:
        if self._given is not None:
            return self._given
        if self._own is None:
            self._own = httpx.AsyncClient(
                timeout=self.timeout,
                follow_redirects=False,
                headers={"User-Agent": _USER_AGENT},
                limits=httpx.Limits(max_connections=64, max_keepalive_connections=32),
            )
        return self._own

    async def aclose(self) -> None:
        if self._own is not None:
            await self._own.aclose()
            self._own = None

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def _queue(self, call: Call, attempts: Attempts) -> None:
        assert self.rate_limiter is not None and call.limit_key is not None
        allowance = attempts.queueing_allowance(self.timeout)
        wait = await self.rate_limiter.reserve(call.limit_key, max_wait=allowance)
        if wait is None:
            raise RateLimited(call.limit_key, allowance)
        if wait > 0:
            await asyncio.sleep(wait)

    async def _run(self, call: Call, *, budget: float | None = None) -> httpx.Response:
        attempts = Attempts(self.retry, limit=call.attempts, budget=budget)
        while True:
            if call.limit_key is not None and self.rate_limiter is not None:
                await self._queue(call, attempts)
            attempts.made += 1
            error: MessagingError
            try:
                response = await self._http().request(
                    call.method,
                    call.url,
                    headers=call.headers,
                    content=call.content,
                    data=call.data,
                    files=call.files,
                    timeout=attempts.timeout(self.timeout),
                    follow_redirects=call.follow_redirects,
                )
            except httpx.TransportError as exc:
                error = _transport_error(call, exc)
            else:
                if response.is_success:
                    return response
                error = _api_error(call, response)
            delay = attempts.delay_after(error, sends=call.sends)
            if delay is None:
                raise error from None
            _log_retry(call, error, attempts, delay)
            await asyncio.sleep(delay)

    async def send(
        self,
        to: str,
        content: Content,
        *,
        reply_to: str | None = None,
        phone_number_id: str | None = None,
        budget: float | None = None,
    ) -> SendResult:
        """As `Client.send`."""
        call = self._send_call(to, content, reply_to, phone_number_id)
        return _wire.decode_send((await self._run(call, budget=budget)).content)

    async def mark_read(self, message_id: str, *, typing: bool = False, phone_number_id: str | None = None) -> None:
        endpoint = self.credentials.endpoint(phone_number_id)
        await self._run(_wire.read_call(endpoint, message_id, typing=typing))

    async def upload_media(
        self, file: Upload, mime_type: str, *, filename: str = "file", phone_number_id: str | None = None
    ) -> str:
        endpoint = self.credentials.endpoint(phone_number_id)
        call = _wire.upload_call(endpoint, _read(file), mime_type, filename, attempts=self.retry.media_attempts)
        return _wire.decode_uploaded((await self._run(call)).content)

    async def get_media(self, media_id: str, *, phone_number_id: str | None = None) -> MediaInfo:
        endpoint = self.credentials.endpoint(phone_number_id)
        call = _wire.media_call(endpoint, media_id, attempts=self.retry.media_attempts)
        return _wire.decode_media((await self._run(call)).content)

    async def delete_media(self, media_id: str, *, phone_number_id: str | None = None) -> None:
        endpoint = self.credentials.endpoint(phone_number_id)
        await self._run(_wire.media_call(endpoint, media_id, attempts=self.retry.media_attempts, method="DELETE"))

    async def download_media(self, media: str | MediaInfo, *, phone_number_id: str | None = None) -> bytes:
        """As `Client.download_media`."""
        if isinstance(media, MediaInfo):
            info = media
        else:
            info = await self.get_media(media, phone_number_id=phone_number_id)
        endpoint = self.credentials.endpoint(phone_number_id)
        calls = self._download_calls(endpoint, info.url)
        for i, call in enumerate(calls):
            try:
                response = await self._run(call)
            except ApiError as exc:
                if exc.status == 405 and i + 1 < len(calls):
                    continue
                raise
            return self._downloaded(call, info, response.content)
        raise AssertionError("unreachable")  # pragma: no cover
