"""The cluster backend: NATS JetStream key-value buckets, one per kind of document.

Compare-and-swap is JetStream's expected-last-subject-sequence check (``KeyValue.update`` with
``last=revision``); the revision of a key is the stream sequence of its last write. Buckets keep
one revision per key and are replicated ``replicas`` times; reads go to the stream leader (direct
gets stay off) so a read never returns a value older than a write already acknowledged.

The client library is asyncio-only while the CLI and the deploy logic are synchronous, so the
store runs its own event loop in a daemon thread and every call waits for its coroutine there.

A cluster changing leaders (a node stopped, a network blip) makes requests time out or answer
"unavailable" for a few seconds; calls retry such errors until ``timeout`` has passed and then raise
:class:`ControlPlaneUnavailable`. Retrying a write is safe: if the first attempt did land, the retry
finds a newer revision and fails with :class:`RevisionConflict`, and the control plane recognises
its own write by the operation id the document carries.

A deleted key leaves a delete marker in its bucket (the marker's sequence is what a re-created key
is compared against): reads treat it as absent. A watch is an ephemeral push consumer of the
bucket's new messages, headers only, checked every few seconds and re-created when its server lost
it; every re-creation and every reconnect count as a change, so the waiter re-reads what it might
have missed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import ssl
import threading
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

import nats
import nats.errors
import nats.js.errors
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from nats.js.client import JetStreamContext
from nats.js.kv import KeyValue

from ployz.control.errors import (
    ControlPlaneMoved,
    ControlPlaneRefused,
    ControlPlaneUnavailable,
    InvalidArgument,
)
from ployz.control.store import KINDS, RevisionConflict, Versioned
from ployz.control.url import redact_url, tls_context

T = TypeVar("T")
log = logging.getLogger(__name__)


def _not_sslproto_eof(record: logging.LogRecord) -> bool:
    """nats-py's protocol asks asyncio to keep a connection half-open at EOF, which asyncio
    cannot do over TLS and says at every connection's end: a warning about nothing (the
    connection closes either way) that would reach every command's stderr."""
    return "eof_received() has no effect when using ssl" not in record.getMessage()


logging.getLogger("asyncio").addFilter(_not_sslproto_eof)

_TRANSIENT = (
    TimeoutError,
    nats.errors.TimeoutError,
    nats.errors.NoServersError,
    nats.errors.NoRespondersError,
    nats.errors.ConnectionReconnectingError,
    nats.errors.StaleConnectionError,
    nats.js.errors.ServiceUnavailableError,
    nats.js.errors.ServerError,
    nats.js.errors.NoStreamResponseError,
)
# JetStream cannot place a replicated bucket while too few of its peers are known (a cluster
# still forming, or a node down while a bucket is created): transient as well.
_NO_SUITABLE_PEERS = 10005
# "subjects overlap with an existing stream": processes that open a new control plane at once
# race to create its buckets, and the server may answer a loser with this instead of the
# stream the winner just made; the retry opens that stream.
_SUBJECTS_OVERLAP = 10065
# "wrong last sequence": the expected-last-subject-sequence check of a write failed.
_WRONG_LAST_SEQUENCE = (10071, 10164)
# "invalid operation on sealed stream": the bucket was sealed when the control plane moved.
_SEALED = 10109
_LOCATION_KEY = "url"


def _is_transient(error: Exception) -> bool:
    if isinstance(error, nats.js.errors.APIError) and error.err_code in (
        _NO_SUITABLE_PEERS, _SUBJECTS_OVERLAP
    ):
        return True
    return isinstance(error, _TRANSIENT)


_AUTHORIZATION_VIOLATION = "Authorization Violation"


async def _first_of(connect: Awaitable[None], refused: asyncio.Event, timeout: float) -> None:
    """``connect`` within ``timeout``; a TimeoutError as soon as ``refused`` is set."""
    connecting = asyncio.ensure_future(connect)
    refusal = asyncio.ensure_future(refused.wait())
    try:
        done, _ = await asyncio.wait({connecting, refusal}, timeout=timeout,
                                     return_when=asyncio.FIRST_COMPLETED)
    finally:
        refusal.cancel()
    if connecting not in done:
        connecting.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await connecting
        raise TimeoutError
    connecting.result()


def _versioned(entry: KeyValue.Entry) -> Versioned:
    # JetStream stamps every entry it returns with its stream sequence, the revision.
    assert entry.revision is not None
    return Versioned(entry.value or b"", entry.revision)


_RETRY_PAUSE_S = 0.2
_BUCKET_PREFIX_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_REQUEST_TIMEOUT_S = 2.0
# A watch asks its server this often whether its consumer still exists (a restarted server has
# forgotten it); the server drops a consumer whose subscriber has been gone this long.
_WATCH_CHECK_S = 2.0
_WATCH_INACTIVE_S = 60.0

PushSubscription = JetStreamContext.PushSubscription
OnMessage = Callable[[Msg], Awaitable[None]]


class NatsStore:
    """:class:`~ployz.control.store.DocumentStore` on NATS JetStream KV."""

    def __init__(
        self,
        servers: list[str],
        *,
        bucket_prefix: str = "ployz",
        replicas: int = 1,
        timeout: float = 20.0,
        ca: bytes | None = None,
    ) -> None:
        if not _BUCKET_PREFIX_RE.match(bucket_prefix):
            raise InvalidArgument(f"bucket prefix {bucket_prefix!r}: letters, digits, '_' or '-'")
        self.url = redact_url(",".join(servers))
        self._servers = servers
        self._bucket_prefix = bucket_prefix
        self._replicas = replicas
        self._timeout = timeout
        self._tls = tls_context(ca) if ca is not None else None
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="ployz-control-nats", daemon=True
        )
        self._thread.start()
        self._nc: Client | None = None
        self._refused = asyncio.Event()
        self._untrusted: Exception | None = None
        self._buckets: dict[str, KeyValue] = {}
        self._watches: set[NatsWatch] = set()  # the open ones; used on the loop only
        try:
            self._call(self._open)
        except BaseException:
            self.close()
            raise

    # --- DocumentStore -------------------------------------------------------------------------

    def get(self, kind: str, key: str) -> Versioned | None:
        async def get() -> Versioned | None:
            try:
                entry = await self._buckets[kind].get(key)
            except nats.js.errors.KeyNotFoundError:
                return None
            return _versioned(entry)

        return self._call(get)

    def create(self, kind: str, key: str, value: bytes) -> int:
        return self._write(lambda: self._buckets[kind].create(key, value), kind, key)

    def update(self, kind: str, key: str, value: bytes, revision: int) -> int:
        return self._write(lambda: self._buckets[kind].update(key, value, last=revision), kind, key)

    def delete(self, kind: str, key: str, revision: int) -> None:
        async def delete() -> None:
            try:
                await self._buckets[kind].delete(key, last=revision)
            except nats.js.errors.APIError as exc:
                if exc.err_code in _WRONG_LAST_SEQUENCE:
                    raise RevisionConflict(
                        f"{kind}/{key} is no longer at revision {revision}"
                    ) from exc
                raise self._moved_error(exc) from exc

        self._call(delete)

    def list(self, kind: str, prefix: str = "") -> list[tuple[str, Versioned]]:
        """Every live key under ``prefix``, each at its latest revision. The keys are the
        subjects the bucket's stream holds and each value is read on its own: a KV watch (what
        nats-py's ``keys()`` uses too) repeats or misses keys updated while it delivers, and
        can even end empty, and the machine facts are rewritten by every heartbeat. A key
        deleted between the two steps is left out."""

        async def scan() -> list[tuple[str, Versioned]]:
            bucket = self._bucket_name(kind)
            subjects = f"$KV.{bucket}."
            info = await self._jetstream().stream_info(f"KV_{bucket}", subjects_filter=subjects + (
                f"{prefix}.>" if prefix else ">"))
            found = []
            for subject in sorted(info.state.subjects or {}):
                key = subject[len(subjects):]
                try:
                    entry = await self._buckets[kind].get(key)
                except nats.js.errors.KeyNotFoundError:  # deleted (the subject keeps a marker)
                    continue
                found.append((key, _versioned(entry)))
            return found

        return self._call(scan)

    def watch(self, *kinds: str) -> NatsWatch:
        buckets = [self._bucket_name(kind) for kind in kinds]

        async def subscribe(on_message: OnMessage) -> list[PushSubscription]:
            subs: list[PushSubscription] = []
            try:
                for bucket in buckets:
                    subs.append(await self._subscribe_changes(bucket, on_message))
            except BaseException:
                await unsubscribe_all(subs)
                raise
            return subs

        watch = NatsWatch(self._loop, subscribe, self._watches)
        self._call(watch.start)
        return watch

    def moved_to(self) -> str | None:
        async def read() -> str | None:
            try:
                bucket = await self._jetstream().key_value(self._location_bucket)
                entry = await bucket.get(_LOCATION_KEY)
            except (nats.js.errors.BucketNotFoundError, nats.js.errors.KeyNotFoundError):
                return None
            return (entry.value or b"").decode()

        return self._call(read)

    # --- moving the control plane (``ployz.control.relocation``) -------------------------------

    def replicas(self) -> int:
        """How many servers hold each bucket (that of the machine facts stands for all)."""
        async def read() -> int:
            info = await self._jetstream().stream_info(f"KV_{self._bucket_name('machines')}")
            return info.config.num_replicas or 1

        return self._call(read)

    def seal(self) -> None:
        """Makes every bucket read-only for good (JetStream's ``sealed`` stream flag); a write
        then raises :class:`ControlPlaneMoved`. Idempotent."""
        async def seal() -> None:
            js = self._jetstream()
            for kind in KINDS:
                config = (await js.stream_info(f"KV_{self._bucket_name(kind)}")).config
                if not config.sealed:
                    config.sealed = True
                    await js.update_stream(config)

        self._call(seal)

    def publish_location(self, url: str) -> None:
        """Records where the control plane moved to, for :meth:`moved_to`: in a bucket of its
        own, written after the sealed ones were copied, so no reader follows to an incomplete
        copy."""
        async def publish() -> None:
            bucket = await self._bucket(self._location_bucket)
            await bucket.put(_LOCATION_KEY, url.encode())

        self._call(publish)

    @property
    def _location_bucket(self) -> str:
        return f"{self._bucket_prefix}-location"

    def close(self) -> None:
        if self._loop.is_closed():
            return
        asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop).result()
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._loop.close()

    # --- internals -----------------------------------------------------------------------------

    async def _open(self) -> None:
        if self._nc is None:
            nc = Client()  # what nats.NATS names
            refused = self._refused
            try:
                # Reconnects are unlimited once connected (a cluster loses nodes); the first
                # connection is bounded so a wrong URL fails instead of hanging, and ends at
                # once when the server refuses the credentials (retrying cannot fix them).
                await _first_of(
                    nc.connect(
                        servers=self._servers,
                        tls=self._tls,
                        connect_timeout=2,
                        # nats-py annotates it int; it is seconds, slept on as given
                        reconnect_time_wait=0.2,  # type: ignore[arg-type]
                        max_reconnect_attempts=-1,
                        allow_reconnect=True,
                        error_cb=self._on_connection_error,
                        reconnected_cb=self._on_reconnected,
                    ),
                    refused,
                    self._timeout,
                )
            except (TimeoutError, nats.errors.Error, OSError) as exc:
                await nc.close()
                if self._untrusted is not None:
                    raise ControlPlaneRefused(
                        f"the NATS server at {self.url} is not one of the cluster's: its TLS "
                        f"certificate does not verify against the control URL's CA "
                        f"({self._untrusted})") from exc
                if refused.is_set():
                    raise ControlPlaneRefused(
                        f"the NATS server at {self.url} refused this machine's credentials "
                        "(authorization violation): the control-plane URL's user or password "
                        "is wrong") from exc
                raise ControlPlaneUnavailable(
                    f"no NATS server reachable at {self.url} within {self._timeout:.0f} s"
                ) from exc
            self._nc = nc
        # Short requests, retried by _call until the overall timeout: a request sent to a node
        # that just died would otherwise wait out a long timeout before the retry that succeeds.
        for kind in KINDS:
            if kind in self._buckets:
                continue
            self._buckets[kind] = await self._bucket(self._bucket_name(kind))

    async def _bucket(self, name: str) -> KeyValue:
        """The bucket, created when it does not exist yet; a creation that lost a race with
        another process's is refused and retried by :meth:`_call` (see :func:`_is_transient`)."""
        js = self._jetstream()
        try:
            return await js.key_value(name)
        except nats.js.errors.BucketNotFoundError:
            return await js.create_key_value(bucket=name, history=1, replicas=self._replicas)

    def _jetstream(self) -> JetStreamContext:
        assert self._nc is not None
        return self._nc.jetstream(timeout=min(_REQUEST_TIMEOUT_S, self._timeout))

    def _bucket_name(self, kind: str) -> str:
        return f"{self._bucket_prefix}-{kind}"

    async def _subscribe_changes(self, bucket: str, on_message: OnMessage) -> PushSubscription:
        """A consumer of the bucket's messages from now on: every put, delete and purge.

        Headers only (a waiter is told that something changed, not what) and without acks. The
        stream and subjects follow the KV convention: bucket B is stream ``KV_B``, key K is
        subject ``$KV.B.K``.
        """
        assert self._nc is not None
        js = self._jetstream()
        return await js.subscribe(
            f"$KV.{bucket}.>",
            stream=f"KV_{bucket}",
            cb=on_message,
            config=ConsumerConfig(ack_policy=AckPolicy.NONE, mem_storage=True, num_replicas=1),
            deliver_policy=DeliverPolicy.NEW,
            headers_only=True,
            inactive_threshold=_WATCH_INACTIVE_S,
        )

    async def _on_reconnected(self) -> None:
        # Changes made while the connection was down may not have reached the watches.
        for watch in self._watches:
            watch.changed()

    async def _shutdown(self) -> None:
        if self._nc is not None:
            # A lost connection means nothing is left to flush.
            with contextlib.suppress(TimeoutError, OSError, nats.errors.Error):
                await asyncio.wait_for(self._nc.close(), 5)
            self._nc = None
        others = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
        for task in others:
            task.cancel()
        await asyncio.gather(*others, return_exceptions=True)

    async def _on_connection_error(self, error: Exception) -> None:
        # A lost server is routine in a cluster: the client reconnects to another one and calls
        # retry meanwhile, so this is worth a log line, not an error on the terminal.
        log.info("NATS connection error (reconnecting): %r", error)
        if isinstance(error, ssl.SSLCertVerificationError):
            self._untrusted = error
            self._refused.set()
        if _AUTHORIZATION_VIOLATION in str(error):
            self._refused.set()

    def _write(self, write: Callable[[], Awaitable[int]], kind: str, key: str) -> int:
        async def attempt() -> int:
            try:
                return await write()
            except nats.js.errors.KeyWrongLastSequenceError as exc:
                raise RevisionConflict(f"{kind}/{key}: {exc}") from exc
            except nats.js.errors.APIError as exc:
                raise self._moved_error(exc) from exc

        return self._call(attempt)

    def _moved_error(self, error: nats.js.errors.APIError) -> Exception:
        """:class:`ControlPlaneMoved` for a write refused by a sealed bucket, else ``error``."""
        if error.err_code != _SEALED:
            return error
        return ControlPlaneMoved(
            f"the control plane at {self.url} has moved to the cluster's replicated JetStream "
            "servers and takes no more writes: run the command again (the same URL leads there)")

    def _call(self, operation: Callable[[], Coroutine[Any, Any, T]]) -> T:
        """Run ``operation`` on the store's loop, retrying transient cluster errors."""
        deadline = time.monotonic() + self._timeout
        while True:
            future = asyncio.run_coroutine_threadsafe(operation(), self._loop)
            try:
                return future.result(max(deadline - time.monotonic(), 0.1) + 5)
            except Exception as exc:
                future.cancel()
                if not _is_transient(exc):
                    raise
                if time.monotonic() >= deadline:
                    raise ControlPlaneUnavailable(
                        f"NATS control plane at {self.url} did not answer within "
                        f"{self._timeout:.0f} s: {exc!r}"
                    ) from exc
                time.sleep(_RETRY_PAUSE_S)


class NatsWatch:
    """:class:`~ployz.control.store.StoreWatch` on some buckets; their consumers live on the
    store's loop and set one :class:`threading.Event` that :meth:`wait` waits on in the caller's
    thread."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        subscribe: Callable[[OnMessage], Awaitable[list[PushSubscription]]],
        live: set[NatsWatch],
    ) -> None:
        self._loop = loop
        self._subscribe = subscribe
        self._live = live  # the store's open watches, told of reconnects
        self._changed = threading.Event()
        self._subs: list[PushSubscription] = []
        self._keeper: asyncio.Task[None] | None = None

    def wait(self, timeout_s: float) -> bool:
        if not self._changed.wait(timeout_s):
            return False
        # Cleared after the wait: a change notified in between was stored before it was
        # notified, so the re-read the caller does now already sees it.
        self._changed.clear()
        return True

    def close(self) -> None:
        if not self._loop.is_closed():  # a closed store has stopped every watch already
            asyncio.run_coroutine_threadsafe(self._stop(), self._loop).result()

    def changed(self) -> None:
        self._changed.set()

    async def start(self) -> None:
        # Idempotent, as the store retries a start that failed halfway.
        if not self._subs:
            self._subs = await self._subscribe(self._on_message)
        if self._keeper is None:
            self._keeper = asyncio.create_task(self._keep())
        self._live.add(self)

    async def _on_message(self, _: Msg) -> None:
        self.changed()

    async def _keep(self) -> None:
        """Re-create the consumer whenever its server no longer knows it (restarted, or the
        node holding it died): without this the watch would stay silent for good."""
        while True:
            await asyncio.sleep(_WATCH_CHECK_S)
            try:
                for sub in self._subs:
                    await sub.consumer_info()
            except Exception as exc:  # any failure: a spurious re-creation only costs a re-read
                log.info("control-plane watch lost its consumer (%r): re-creating it", exc)
                await self._resubscribe()

    async def _resubscribe(self) -> None:
        await self._unsubscribe()
        failures = 0
        while True:
            try:
                self._subs = await self._subscribe(self._on_message)
                break
            except Exception as exc:  # the server is still away: keep trying until it is back
                if failures == 0:
                    log.info("control-plane watch cannot subscribe yet (retrying): %r", exc)
                failures += 1
                await asyncio.sleep(_RETRY_PAUSE_S)
        self.changed()

    async def _stop(self) -> None:
        self._live.discard(self)
        if self._keeper is not None:
            self._keeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._keeper
        await self._unsubscribe()

    async def _unsubscribe(self) -> None:
        subs, self._subs = self._subs, []
        await unsubscribe_all(subs)


async def unsubscribe_all(subs: list[PushSubscription]) -> None:
    for sub in subs:
        # The consumer may be gone with its server; the server drops one left behind.
        with contextlib.suppress(Exception):
            await asyncio.wait_for(sub.unsubscribe(), _REQUEST_TIMEOUT_S)
