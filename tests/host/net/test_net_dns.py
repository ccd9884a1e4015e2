"""The services' DNS server on real sockets, asked by a real resolver library (dnspython) over
UDP and TCP: answers, TTL 0, NXDOMAIN, REFUSED, records swapped while it serves, and hostile
clients (garbage, answers, a TCP client that never speaks) that neither crash nor hold it."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Iterator

import dns.flags
import dns.message
import dns.query
import dns.rcode
import pytest

from ployz.net import dns as server_module
from ployz.net.dns import DnsServer

pytestmark = pytest.mark.host

HOST = "127.0.0.1"
RECORDS = {"web.shop.ployz.internal": "10.212.0.5", "db.shop.ployz.internal": "10.212.0.6"}


def free_port() -> int:
    """A port free for both UDP and TCP."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
            tcp.bind((HOST, 0))
            port = int(tcp.getsockname()[1])
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
                try:
                    udp.bind((HOST, port))
                except OSError:
                    continue
            return port


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch) -> Iterator[DnsServer]:
    """The server on its own event loop in a thread, as in the agent; idle TCP clients get
    1 s instead of 10 (the test waits for it)."""
    monkeypatch.setattr(server_module, "TCP_IDLE_S", 1.0)
    dns_server = DnsServer(HOST, free_port())
    dns_server.set_records(RECORDS)
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    asyncio.run_coroutine_threadsafe(dns_server.start(), loop).result(10)
    yield dns_server
    asyncio.run_coroutine_threadsafe(dns_server.close(), loop).result(10)
    loop.call_soon_threadsafe(loop.stop)
    thread.join()
    loop.close()


def ask(server: DnsServer, name: str, rdtype: str = "A", tcp: bool = False) -> dns.message.Message:
    query = dns.message.make_query(name, rdtype)
    if tcp:
        return dns.query.tcp(query, HOST, port=server.port, timeout=5)
    return dns.query.udp(query, HOST, port=server.port, timeout=5)


@pytest.mark.parametrize("tcp", [False, True], ids=["udp", "tcp"])
def test_a_service_name_is_answered_with_its_address_and_ttl_zero(server, tcp):
    reply = ask(server, "web.shop.ployz.internal", tcp=tcp)
    assert reply.rcode() == dns.rcode.NOERROR and reply.flags & dns.flags.AA
    (rrset,) = reply.answer
    assert [r.to_text() for r in rrset] == ["10.212.0.5"] and rrset.ttl == 0
    again = ask(server, "WEB.Shop.Ployz.Internal", tcp=tcp)  # names are case-insensitive
    assert [r.to_text() for r in again.answer[0]] == ["10.212.0.5"]


def test_unknown_names_other_types_and_other_zones(server):
    assert ask(server, "nope.shop.ployz.internal").rcode() == dns.rcode.NXDOMAIN
    empty = ask(server, "web.shop.ployz.internal", "AAAA")
    assert empty.rcode() == dns.rcode.NOERROR and empty.answer == []
    outside = ask(server, "example.com")
    assert outside.rcode() == dns.rcode.REFUSED and outside.answer == []


def test_records_swapped_while_serving_are_answered_at_once(server):
    server.set_records({**RECORDS, "api.shop.ployz.internal": "10.212.0.9"})
    assert [r.to_text() for r in ask(server, "api.shop.ployz.internal").answer[0]] == [
        "10.212.0.9"]
    server.set_records({})
    assert ask(server, "web.shop.ployz.internal").rcode() == dns.rcode.NXDOMAIN


def test_garbage_and_answers_get_formerr_or_nothing_and_the_server_goes_on(server):
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        udp.settimeout(1)
        udp.sendto(b"\x12\x34\x01\x00" + b"\xff" * 20, (HOST, server.port))
        reply = dns.message.from_wire(udp.recv(512))
        assert reply.id == 0x1234 and reply.rcode() == dns.rcode.FORMERR
        for silent in (b"\x01", dns.message.make_response(
                dns.message.make_query("web.shop.ployz.internal", "A")).to_wire()):
            udp.sendto(silent, (HOST, server.port))
            with pytest.raises(TimeoutError):
                udp.recv(512)
    assert ask(server, "db.shop.ployz.internal").answer


def test_a_tcp_client_that_never_speaks_is_cut_and_does_not_block_others(server):
    with socket.create_connection((HOST, server.port)) as idle:
        assert ask(server, "web.shop.ployz.internal", tcp=True).answer  # served meanwhile
        idle.settimeout(5)
        started = time.monotonic()
        assert idle.recv(1) == b""  # closed by the server after its idle time
        assert time.monotonic() - started < 5
    with socket.create_connection((HOST, server.port)) as slow:
        slow.sendall(b"\x00\x40" + b"\x00" * 10)  # says 64 bytes, sends 10
        slow.settimeout(5)
        assert slow.recv(1) == b""
