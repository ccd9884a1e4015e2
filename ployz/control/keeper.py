"""Keeping a lease while long work runs (a migration's pre-copy can take hours).

:class:`LeaseKeeper` renews the lease from a background thread every ``ttl / 3`` seconds. If a
renewal is refused (someone else holds the lock now) or the control plane stays unreachable until
the lease would expire, the lease is lost: :attr:`LeaseKeeper.lost` is set and :meth:`check`
raises :class:`StaleFencingToken`, which the deploy turns into its lock-lost failure. The work
calls ``check()`` between steps; the commit itself re-checks the token atomically anyway.
"""

from __future__ import annotations

import threading

from ployz.control.errors import ControlPlaneError, StaleFencingToken
from ployz.control.models import Lease, utcnow
from ployz.control.plane import ControlPlane


class LeaseKeeper:
    """Renews ``lease`` until the ``with`` block ends; does not release it (the caller does)."""

    def __init__(self, cp: ControlPlane, lease: Lease, ttl: float) -> None:
        self._cp = cp
        self._lease = lease
        self._ttl = ttl
        self._interval = ttl / 3
        self._stop = threading.Event()
        self._error: StaleFencingToken | None = None
        self.lost = threading.Event()
        self._thread = threading.Thread(
            target=self._run, name=f"lease-keeper {lease.name}", daemon=True
        )

    @property
    def lease(self) -> Lease:
        """The lease as last renewed."""
        return self._lease

    def check(self) -> Lease:
        """The current lease, or :class:`StaleFencingToken` if it was lost."""
        if self._error is not None:
            raise self._error
        return self._lease

    def __enter__(self) -> LeaseKeeper:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        name, token = self._lease.name, self._lease.token
        while not self._stop.wait(self._interval):
            try:
                self._lease = self._cp.renew(name, token, self._ttl)
            except StaleFencingToken as refused:
                self._lose(refused)
                return
            except ControlPlaneError as unreachable:
                # Keep trying while the lease is still ours; past its expiry it is gone.
                expiry = self._lease.expires_at
                if utcnow() >= expiry:
                    when = expiry.isoformat(timespec="seconds")
                    why = f"not renewed before it expired at {when}: {unreachable}"
                    self._lose(StaleFencingToken(name, token, why))
                    return

    def _lose(self, error: StaleFencingToken) -> None:
        self._error = error
        self.lost.set()
