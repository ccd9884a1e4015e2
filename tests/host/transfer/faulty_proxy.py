"""A real TCP proxy for the transfer tests that misbehaves on purpose: it cuts connections after
a given number of client-to-server bytes, or flips one byte at a given offset, once per entry of
its fault plan, and relays faithfully after the plan runs out."""

from __future__ import annotations

import contextlib
import socket
import threading
from dataclasses import dataclass


@dataclass
class Fault:
    at: int  # client-to-server byte offset within the connection
    kind: str  # "cut" or "flip"


class FaultyProxy:
    def __init__(self, upstream: tuple[str, int], plan: list[Fault] | None = None,
                 repeat: Fault | None = None) -> None:
        self.upstream = upstream
        self.plan = list(plan or [])
        self.repeat = repeat  # applied to every connection once the plan is used up
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.address = self.listener.getsockname()
        self.connections = 0
        self.faults_done = 0
        self._closing = threading.Event()
        self._thread = threading.Thread(target=self._accept_loop, daemon=True)
        self._relays: list[threading.Thread] = []
        self._sockets: list[socket.socket] = []

    def __enter__(self) -> FaultyProxy:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._closing.set()
        _shutdown(self.listener)  # wakes the accept loop; close alone would not
        self.listener.close()
        self._thread.join(5)
        _shutdown(*self._sockets)
        for relay in self._relays:
            relay.join(5)

    def _accept_loop(self) -> None:
        while not self._closing.is_set():
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            fault = self.plan.pop(0) if self.plan else self.repeat
            self.connections += 1
            relay = threading.Thread(target=self._relay, args=(client, fault), daemon=True)
            relay.start()
            self._relays.append(relay)

    def _relay(self, client: socket.socket, fault: Fault | None) -> None:
        try:
            server = socket.create_connection(self.upstream)
        except OSError:
            client.close()
            return
        self._sockets += [client, server]
        back = threading.Thread(target=self._pump, args=(server, client, None), daemon=True)
        back.start()
        self._pump(client, server, fault)
        back.join()
        client.close()
        server.close()

    def _pump(self, source: socket.socket, sink: socket.socket, fault: Fault | None) -> None:
        """Copies one direction; the first end that closes or fails closes both."""
        forwarded = 0
        try:
            while data := source.recv(1 << 16):
                if fault and forwarded <= fault.at < forwarded + len(data):
                    cut = fault.at - forwarded
                    self.faults_done += 1
                    if fault.kind == "cut":
                        sink.sendall(data[:cut])
                        return
                    data = data[:cut] + bytes([data[cut] ^ 0x40]) + data[cut + 1:]
                    fault = None
                forwarded += len(data)
                sink.sendall(data)
        except OSError:
            pass
        finally:
            _shutdown(source, sink)


def _shutdown(*sockets: socket.socket) -> None:
    for sock in sockets:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)
