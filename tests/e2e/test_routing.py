"""Routing follows the service, seen by a client on another machine.

A web service serving a page from its volume on port 8080 runs on machine-a; a client on
machine-c reaches it through machine-c's own DNS by name, by its stable address, and through
machine-c's gateway by HTTP host. Then the service migrates to machine-b while the client asks
every 50 ms, each request another way in turn. The service writes its container's hostname into
its volume when it starts, and the client asks for that file, so each answer names the instance
that gave it. After the commit no answer comes from the old instance, every answer after the
fence comes from the new one, the address is the same, every machine confirmed the route, and
the gap the client saw (its last answer from the old instance to its first from the new) is
reported in reports/routing-client-gap.json.

Then the refusals routing adds to a plan: a gateway host another service answers to.
"""

from __future__ import annotations

import json
import subprocess
import textwrap
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import dns.message
import dns.query
import pytest

from ployz.net.names import service_name
from ployz.runtime.model import service_labels
from ployz.runtime.testimage import TEST_IMAGE
from ployz.sandbox.cluster import Cluster, Machine
from ployz.sandbox.watch import VIAS, Watched, WatchingClient, answered, client_gap
from tests.e2e.migration_run import service
from tests.e2e.sandbox_operator import agent, dump, ployzctl, ployzctl_process

pytestmark = pytest.mark.timeout(1200)

NAMESPACE = "site"
NAME = service_name(NAMESPACE, "web")
HOST = "web.example"
PAGE = "a page kept on the volume of the service"
MANIFEST = textwrap.dedent("""
    namespace = "{namespace}"
    [[volumes]]
    name = "www"
    quota = "64M"
    owner = "machine-a"
    [[services]]
    name = "web"
    placement = "machine-a"
    [services.template]
    image = "{image}"
    command = ["sh", "-c", {command}]
    mounts = {{ www = "/www" }}
    ports = [8080]
    [services.http]
    host = "{host}"
    port = 8080
""")
COMMAND = ("trap 'exit 0' TERM; mkdir -p /www/site; "
           f"[ -f /www/site/page ] || echo '{PAGE}' > /www/site/page; "
           "hostname > /www/site/instance; httpd -f -p 8080 -h /www/site & wait")
"""The page is written once, on the first machine; each instance writes its hostname (its
container's short id) when it starts, on the volume it runs on, before it serves."""


def write_manifest(path: Path, namespace: str, host: str) -> Path:
    path.write_text(MANIFEST.format(namespace=namespace, image=TEST_IMAGE,
                                    command=json.dumps(COMMAND), host=host))
    return path


def hostname(cluster: Cluster, machine: Machine) -> str:
    """The short container id the service's instance on ``machine`` answers with."""
    with agent(cluster, machine) as client:
        (container,) = client.containers.list(service_labels(NAMESPACE, "web"))
    return container.id[:12]


@pytest.fixture(scope="module")
def moved(cluster: Cluster, machine_c: Machine,
          tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    a, b = cluster.machines[:2]
    work = tmp_path_factory.mktemp("routing")
    done = ployzctl(cluster, "deploy", "-f", str(write_manifest(work / "site.toml", NAMESPACE,
                                                                HOST)))
    assert done.returncode == 0, done.stderr
    before = service(cluster, NAMESPACE)
    old = hostname(cluster, a)
    watched = Watched(NAMESPACE, "web", before["address"], 8080, HOST, "/page")
    first = WatchingClient(machine_c, watched, work / "page.jsonl")
    deadline = time.monotonic() + 120
    while len(answered(first.records())) < 3:
        assert time.monotonic() < deadline, f"the client never got the page: {first.records()}"
        first.out.unlink(missing_ok=True)
        first.once()
    pages = first.records()
    client = WatchingClient(machine_c, replace(watched, path="/instance"),
                            work / "instance.jsonl")
    client.start()
    try:
        deadline = time.monotonic() + 60
        while not answered(client.records()):
            assert time.monotonic() < deadline, "the client got no answer before the move"
            time.sleep(0.5)
        events: list[tuple[float, dict[str, Any]]] = []
        apply = ployzctl_process(cluster, "migrate", "apply", f"{NAMESPACE}/web", "--to", b.id,
                                 "--json")
        for line in apply.stdout:
            events.append((time.time(), json.loads(line)))
        status = apply.wait(timeout=900)
        stderr = apply.stderr.read()
        time.sleep(3)  # the client goes on asking the moved service
    finally:
        client.stop()
    yield {"pages": pages, "records": client.records(), "events": events, "status": status,
           "stderr": stderr, "before": before, "after": service(cluster, NAMESPACE),
           "old": old, "new": hostname(cluster, b) if status == 0 else None}


def seen_at(events: list[tuple[float, dict[str, Any]]], wanted: dict[str, Any]) -> float:
    """When the test read the first event with ``wanted``'s fields: just after it happened."""
    return next(t for t, e in events if all(e.get(k) == v for k, v in wanted.items()))


def test_the_client_gets_the_page_by_name_by_address_and_through_the_gateway(moved):
    pages = answered(moved["pages"])
    assert {r["via"] for r in pages} == {"name", "address", "gateway"}
    assert all(r["body"] == PAGE for r in pages)
    assert {r["address"] for r in pages if r["via"] == "name"} == {moved["before"]["address"]}


def test_after_the_commit_only_the_new_instance_answers_and_the_address_stays(moved):
    assert moved["status"] == 0, moved["stderr"]
    events, records = moved["events"], answered(moved["records"])
    fenced = seen_at(events, {"event": "phase", "phase": "final-send"})
    committed = seen_at(events, {"event": "committed"})
    old, new = moved["old"], moved["new"]
    assert old != new
    assert {r["body"] for r in records} <= {old, new}
    assert [r for r in records if r["t"] > committed and r["body"] == old] == []
    assert all(r["body"] == new for r in records if r["t"] > fenced)
    after_commit = [r for r in records if r["t"] > committed]
    assert {r["via"] for r in after_commit} == {"name", "address", "gateway"}
    assert moved["after"]["address"] == moved["before"]["address"]
    assert moved["after"]["machine"] == "machine-b"
    assert {r["address"] for r in moved["records"] if r["address"]} == {
        moved["before"]["address"]}


def test_every_machine_confirmed_the_route_before_the_old_instance_went(moved):
    events = [e for _, e in moved["events"]]
    (routes,) = [e for e in events if e["event"] == "routes"]
    assert sorted(routes["confirmed"]) == ["machine-a", "machine-b", "machine-c"]
    assert routes["missing"] == []
    done = events[-1]
    assert done["event"] == "done" and done["routes"]["version"] == routes["version"]
    routed = events.index(routes)
    cleanup = events.index({"event": "phase", "phase": "cleanup"})
    assert routed < cleanup  # the old instance is removed in the cleanup


def test_the_gap_the_client_saw_is_reported(moved):
    gap = client_gap(moved["records"], moved["old"], moved["new"])
    gap["server_window_s"] = moved["events"][-1][1]["cutover_s"]["total"]
    print("client-observed downtime:", gap)
    reports = Path(__file__).resolve().parents[2] / "reports"
    reports.mkdir(exist_ok=True)
    (reports / "routing-client-gap.json").write_text(json.dumps(gap, indent=2) + "\n")
    assert gap["client_gap_s"] is not None and gap["client_gap_s"] > 0
    assert all(gap["by_way"][via] is not None for via in VIAS)


def test_every_machine_answers_the_name_and_routes_the_gateway(cluster: Cluster, moved):
    address = moved["before"]["address"]
    for machine in cluster.machines[:2]:  # this process is on machine-a; b's over the overlay
        reply = dns.query.udp(dns.message.make_query(NAME, "A"), machine.overlay_ip, timeout=10)
        assert [r.to_text() for r in reply.answer[0]] == [address] and reply.answer[0].ttl == 0
    got = subprocess.run(["wget", "-q", "-O", "-", "--header", f"Host: {HOST}",
                          f"http://{cluster.machines[0].endpoint.underlay_ip}/instance"],
                         capture_output=True, text=True, timeout=60)
    assert got.stdout.strip() == moved["new"], got.stderr


def test_a_gateway_host_another_service_has_is_refused_without_change(
        cluster: Cluster, moved, tmp_path: Path):
    before = dump(cluster)
    refused = ployzctl(cluster, "deploy", "-f",
                       str(write_manifest(tmp_path / "copy.toml", "copy", HOST)))
    assert refused.returncode != 0
    assert f"gateway host '{HOST}' belongs to service {NAMESPACE}/web" in refused.stderr
    assert dump(cluster) == before
