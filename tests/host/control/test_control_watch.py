"""The storage contract's delete and watch, on both backends, from separate connections."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator

import nats
import pytest

from ployz.control.store import DocumentStore, RevisionConflict
from ployz.control.url import open_store

# A watch must report a change well within this (SQLite polls every 0.5 s, NATS pushes).
PROMPT_S = 10.0


@pytest.fixture
def store(control_url: str) -> Iterator[DocumentStore]:
    opened = open_store(control_url)
    yield opened
    opened.close()


@pytest.fixture
def writer(control_url: str) -> Iterator[DocumentStore]:
    """A second connection to the same store, as another process would have."""
    opened = open_store(control_url)
    yield opened
    opened.close()


def later(action, delay_s: float = 0.3) -> threading.Thread:
    thread = threading.Thread(target=lambda: (time.sleep(delay_s), action()))
    thread.start()
    return thread


def timed_wait(watch, timeout_s: float) -> tuple[bool, float]:
    start = time.monotonic()
    changed = watch.wait(timeout_s)
    return changed, time.monotonic() - start


def test_delete_is_compare_and_swap(store: DocumentStore, writer: DocumentStore) -> None:
    first = store.create("machines", "machine-a", b"one")
    second = writer.update("machines", "machine-a", b"two", first)
    with pytest.raises(RevisionConflict, match="machines/machine-a"):
        store.delete("machines", "machine-a", first)
    assert store.get("machines", "machine-a") == (b"two", second)

    store.delete("machines", "machine-a", second)
    assert store.get("machines", "machine-a") is None
    assert writer.get("machines", "machine-a") is None
    assert store.list("machines") == []
    with pytest.raises(RevisionConflict):
        writer.delete("machines", "machine-a", second)  # gone already
    with pytest.raises(RevisionConflict):
        writer.update("machines", "machine-a", b"late", second)
    assert store.get("machines", "machine-a") is None


def test_a_recreated_key_never_takes_an_old_revision(store: DocumentStore) -> None:
    old = store.create("machines", "machine-a", b"old")
    store.delete("machines", "machine-a", old)
    new = store.create("machines", "machine-a", b"new")
    assert new > old
    with pytest.raises(RevisionConflict):  # a writer that read the deleted document
        store.update("machines", "machine-a", b"stale", old)
    assert store.get("machines", "machine-a") == (b"new", new)


def test_list_skips_deleted_documents(store: DocumentStore) -> None:
    revisions = {key: store.create("leases", key, key.encode()) for key in ("a", "b", "c")}
    store.delete("leases", "b", revisions["b"])
    assert [key for key, _ in store.list("leases")] == ["a", "c"]


def test_watch_times_out_without_a_change(store: DocumentStore) -> None:
    watch = store.watch("machines")
    try:
        changed, took = timed_wait(watch, 0.4)
        assert not changed
        assert took >= 0.4
    finally:
        watch.close()


def test_watch_wakes_on_a_write_and_a_delete_from_another_connection(
    store: DocumentStore, writer: DocumentStore
) -> None:
    watch = store.watch("machines")
    try:
        created: list[int] = []
        thread = later(lambda: created.append(writer.create("machines", "machine-a", b"x")))
        changed, _ = timed_wait(watch, 10)
        assert changed
        assert store.get("machines", "machine-a") is not None  # stored before it was reported
        thread.join()

        thread = later(lambda: writer.delete("machines", "machine-a", created[0]))
        changed, _ = timed_wait(watch, 10)
        assert changed
        assert store.get("machines", "machine-a") is None
        thread.join()

        assert watch.wait(0.6) is False  # each change is reported once
    finally:
        watch.close()


def test_changes_before_a_wait_are_reported_once(
    store: DocumentStore, writer: DocumentStore
) -> None:
    watch = store.watch("machines")
    try:
        for index in range(5):
            writer.create("machines", f"machine-{index}", b"x")
        deadline = time.monotonic() + PROMPT_S
        assert watch.wait(PROMPT_S)
        while time.monotonic() < deadline and watch.wait(0.1):
            pass  # NATS may deliver the five notifications across two waits
        assert watch.wait(0.6) is False
    finally:
        watch.close()


def test_watch_sees_only_its_kind(store: DocumentStore, writer: DocumentStore) -> None:
    machines, namespaces = store.watch("machines"), store.watch("namespaces")
    try:
        writer.create("namespaces", "shop", b"x")
        assert namespaces.wait(PROMPT_S)
        assert machines.wait(0.6) is False
    finally:
        machines.close()
        namespaces.close()


def test_one_watch_of_two_kinds_wakes_for_either(store: DocumentStore,
                                                 writer: DocumentStore) -> None:
    watch = store.watch("machines", "namespaces")
    try:
        writer.create("namespaces", "shop", b"x")
        assert watch.wait(PROMPT_S)
        writer.create("machines", "machine-a", b"x")
        assert watch.wait(PROMPT_S)
        writer.create("deploys", "d1", b"x")
        assert watch.wait(0.6) is False
    finally:
        watch.close()


def test_a_closed_watch_and_store_close_in_any_order(control_url: str) -> None:
    opened = open_store(control_url)
    kept = opened.watch("machines")
    closed = opened.watch("machines")
    closed.close()
    opened.close()
    kept.close()  # after its store: nothing left to stop, and no error


def test_nats_watch_survives_a_server_restart(private_nats_server) -> None:
    url = f"nats://{private_nats_server.url}?timeout=30"
    store, writer = open_store(url), open_store(url)
    watch = store.watch("machines")
    try:
        writer.create("machines", "machine-a", b"x")
        assert watch.wait(PROMPT_S)

        private_nats_server.kill()
        assert watch.wait(0.5) is False
        private_nats_server.start()
        # Changes made while it was away might have been missed: the watch says "re-read".
        assert watch.wait(30)
        while watch.wait(3):
            pass  # the reconnect and the re-created consumer may each report one
        later(lambda: writer.create("machines", "machine-b", b"x"))
        changed, _ = timed_wait(watch, 30)
        assert changed
    finally:
        watch.close()
        store.close()
        writer.close()


def consumer_node(server_urls: list[str], stream: str) -> str:
    """The server holding the one consumer of ``stream``: the watch's."""

    async def ask() -> str:
        nc = await nats.connect(servers=server_urls)
        try:
            (info,) = await nc.jetstream().consumers_info(stream)
            assert info.cluster is not None and info.cluster.leader is not None
            return info.cluster.leader
        finally:
            await nc.close()

    return asyncio.run(ask())


def test_nats_watch_keeps_working_when_its_consumers_node_dies(nats_cluster) -> None:
    hosts = ",".join(server.url for server in nats_cluster)
    url = f"nats://{hosts}?replicas=3&timeout=30"
    store, writer = open_store(url), open_store(url)
    watch = store.watch("machines")
    try:
        writer.create("machines", "machine-a", b"x")
        assert watch.wait(PROMPT_S)
        node = consumer_node([f"nats://{s.url}" for s in nats_cluster], "KV_ployz-machines")
        next(server for server in nats_cluster if server.name == node).kill()
        writer.create("machines", "machine-b", b"x")  # retried until the cluster answers
        assert watch.wait(30)
        while watch.wait(4):
            pass  # until the consumer is re-created elsewhere, which reports a change too
        later(lambda: writer.create("machines", "machine-c", b"x"))
        changed, _ = timed_wait(watch, 30)
        assert changed
    finally:
        watch.close()
        store.close()
        writer.close()
