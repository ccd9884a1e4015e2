"""The machine's DNS server for services: ``<service>.<namespace>.ployz.internal`` is answered
with the service's stable address, on UDP and TCP port 53 of the machine's overlay address.

Answers carry TTL 0, so a client asks again each time and never keeps an address a migration
made stale (the address itself does not change, but a removed service's does go). Names in the
zone that no service has are NXDOMAIN; a known name asked for another type than A has no
records (NOERROR, empty); names outside the zone are REFUSED: this server is authoritative for
its zone only and resolves nothing else.

The wire format is dnspython's. Whatever a client sends is parsed by it and nothing else; a
packet it cannot parse is answered FORMERR when its header can be read, else dropped. TCP
clients get :data:`TCP_IDLE_S` to send each message and at most :data:`TCP_CLIENTS` connections
are served at once, so clients that connect and never speak cannot hold the server.

The records come from :meth:`DnsServer.set_records`, which the agent calls from another thread
at each reconcile: it swaps the whole table, which readers take in one reference.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import struct
from collections.abc import Mapping
from typing import cast

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.opcode
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset

from ployz.net.names import ZONE

PORT = 53
TTL = 0
TCP_IDLE_S = 10.0
TCP_CLIENTS = 64
_HEADER = 12

log = logging.getLogger(__name__)
_ZONE = dns.name.from_text(ZONE)


def answer(query_wire: bytes, records: Mapping[str, str]) -> bytes | None:
    """The answer to one DNS message, from ``records`` (lowercase name without the final dot
    -> IPv4 address); None for a message not worth an answer (no readable header, or itself
    an answer)."""
    try:
        query = dns.message.from_wire(query_wire)
    except dns.exception.DNSException:
        return _format_error(query_wire)
    if query.flags & dns.flags.QR:
        return None
    response = dns.message.make_response(query)
    response.flags |= dns.flags.AA
    response.flags &= ~dns.flags.RA
    if query.opcode() != dns.opcode.QUERY or len(query.question) != 1:
        response.set_rcode(dns.rcode.NOTIMP if query.opcode() != dns.opcode.QUERY
                           else dns.rcode.FORMERR)
        return response.to_wire()
    question = query.question[0]
    if question.rdclass != dns.rdataclass.IN or not question.name.is_subdomain(_ZONE):
        response.flags &= ~dns.flags.AA
        response.set_rcode(dns.rcode.REFUSED)
        return response.to_wire()
    address = records.get(question.name.to_text(omit_final_dot=True).lower())
    if address is None:
        response.set_rcode(dns.rcode.NXDOMAIN)
    elif question.rdtype in (dns.rdatatype.A, dns.rdatatype.ANY):
        response.answer.append(dns.rrset.from_text(question.name, TTL, dns.rdataclass.IN,
                                                   dns.rdatatype.A, address))
    return response.to_wire()


def _format_error(wire: bytes) -> bytes | None:
    """FORMERR echoing the message's id, when at least its header is there and it is a
    query (never answer an answer: two servers could bounce packets forever)."""
    if len(wire) < _HEADER:
        return None
    ident, flags = struct.unpack("!HH", wire[:4])
    if flags & dns.flags.QR:
        return None
    response_flags = dns.flags.QR | (flags & dns.flags.RD) | dns.rcode.FORMERR
    return struct.pack("!HHHHHH", ident, response_flags, 0, 0, 0, 0)


class DnsServer:
    """Serves :func:`answer` on UDP and TCP of one address, in the caller's event loop."""

    def __init__(self, host: str, port: int = PORT) -> None:
        self.host = host
        self.port = port
        self._records: Mapping[str, str] = {}
        self._udp: asyncio.DatagramTransport | None = None
        self._tcp: asyncio.Server | None = None
        self._clients = asyncio.Semaphore(TCP_CLIENTS)

    def set_records(self, records: Mapping[str, str]) -> None:
        """Replaces every record at once (thread-safe: one reference swap)."""
        self._records = dict(records)

    @property
    def records(self) -> Mapping[str, str]:
        return self._records

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._udp, _ = await loop.create_datagram_endpoint(
            lambda: _Datagrams(self), local_addr=(self.host, self.port))
        try:
            self._tcp = await asyncio.start_server(self._serve_tcp, self.host, self.port)
        except BaseException:
            self._udp.close()
            raise
        log.info("DNS for %s on %s:%d (UDP, TCP)", ZONE, self.host, self.port)

    async def close(self) -> None:
        if self._udp is not None:
            self._udp.close()
        if self._tcp is not None:
            self._tcp.close()
            await self._tcp.wait_closed()

    async def _serve_tcp(self, reader: asyncio.StreamReader,
                         writer: asyncio.StreamWriter) -> None:
        if self._clients.locked():  # full: the newest client goes, the others keep being served
            writer.close()
            return
        async with self._clients:
            with contextlib.suppress(asyncio.TimeoutError, asyncio.IncompleteReadError,
                                     ConnectionError):
                while True:
                    (length,) = struct.unpack(
                        "!H", await asyncio.wait_for(reader.readexactly(2), TCP_IDLE_S))
                    query = await asyncio.wait_for(reader.readexactly(length), TCP_IDLE_S)
                    reply = answer(query, self._records)
                    if reply is None:
                        break
                    writer.write(struct.pack("!H", len(reply)) + reply)
                    await asyncio.wait_for(writer.drain(), TCP_IDLE_S)
            writer.close()


class _Datagrams(asyncio.DatagramProtocol):
    def __init__(self, server: DnsServer) -> None:
        self._server = server
        self._transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A datagram endpoint's transport (not all loops' classes derive from the ABC).
        self._transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        reply = answer(data, self._server.records)
        if reply is not None and self._transport is not None:
            self._transport.sendto(reply, addr)
