"""Fuzzes the agents' DNS server with whatever a client on the overlay may send it: every byte
string goes to ``ployz.net.dns.answer``, which must return None or an answer, never raise.

An answer must itself be a well-formed DNS response (dnspython parses it back) carrying the
query's id and QR set, with nothing but REFUSED for names outside ``ployz.internal``, the one
known name's A record, or NXDOMAIN for other names in the zone: a finding otherwise. A packet
that is itself a response is never answered (two servers could bounce packets forever).

Run: ``python tests/fuzz/fuzz_dns.py [libFuzzer flags] [corpus dirs]``, or through
``tests/fuzz/run.py``.
"""

from __future__ import annotations

import struct
import sys
from collections.abc import Iterator

import atheris

with atheris.instrument_imports():
    import dns.flags
    import dns.message
    import dns.rcode
    import dns.rdatatype

    from ployz.net import dns as server

RECORDS = {"web.shop.ployz.internal": "10.212.0.5"}


def check(data: bytes) -> None:
    reply = server.answer(data, RECORDS)
    if reply is None:
        return
    response = dns.message.from_wire(reply)  # raises (a finding) if the answer is malformed
    assert response.flags & dns.flags.QR, "an answer without QR"
    assert len(data) >= 2 and response.id == struct.unpack("!H", data[:2])[0], "id changed"
    assert not (struct.unpack("!H", data[2:4])[0] & dns.flags.QR), "answered an answer"
    for rrset in response.answer:
        assert rrset.name.to_text(omit_final_dot=True).lower() in RECORDS, rrset
        assert rrset.rdtype == dns.rdatatype.A and rrset.ttl == 0, rrset
        assert {r.to_text() for r in rrset} == {"10.212.0.5"}, rrset
    if response.answer:
        assert response.rcode() == dns.rcode.NOERROR


def test_one_input(data: bytes) -> None:
    check(data)


def seeds() -> Iterator[bytes]:
    for name, rdtype in (("web.shop.ployz.internal", "A"), ("WEB.shop.ployz.internal.", "AAAA"),
                         ("nope.shop.ployz.internal", "A"), ("example.com", "A"),
                         ("web.shop.ployz.internal", "ANY")):
        yield dns.message.make_query(name, rdtype).to_wire()
    yield dns.message.make_query("web.shop.ployz.internal", "A", use_edns=0).to_wire()
    yield bytes(12)
    yield b"\x12\x34\x01\x00\x00\x02" + bytes(6)


def main() -> None:
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
