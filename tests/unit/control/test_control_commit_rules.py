"""The pure rules that turn a namespace state and a change set into the next state."""

from __future__ import annotations

import pytest

from ployz.control import (
    InvalidChange,
    NamespaceState,
    PutService,
    PutVolume,
    RecordTransfer,
    RemoveVolume,
    Service,
    SetPlacement,
    SetVolumeOwner,
    TransferEvidence,
    UnknownVolume,
    Volume,
)
from ployz.control.commits import apply_changes, referenced_machines
from ployz.control.models import utcnow

EMPTY = NamespaceState(namespace="shop")
VOLUME = Volume(namespace="shop", name="db", dataset="tank/shop/db", owner="m1")
SERVICE = Service(namespace="shop", name="web", image="busybox", machine="m1")


def evidence(target: str = "m2", guid: int = 5, received: int = 5) -> TransferEvidence:
    return TransferEvidence(
        namespace="shop",
        volume="db",
        source="m1",
        target=target,
        snapshot="s",
        guid=guid,
        received_guid=received,
        bytes=10,
        checksum="c",
        acknowledged_at=utcnow(),
    )


def test_changes_apply_in_order_within_one_commit() -> None:
    state = apply_changes(
        EMPTY,
        (
            PutVolume(volume=VOLUME),
            PutService(service=SERVICE),
            SetVolumeOwner(volume="db", owner="m2"),
            SetPlacement(service="web", machine="m2"),
            RecordTransfer(evidence=evidence()),
        ),
    )
    assert state.volumes["db"].owner == "m2"
    assert state.services["web"].machine == "m2"
    assert state.transfers["db"].guid == 5
    assert EMPTY.volumes == {}  # the input state is not modified


def test_removing_a_volume_drops_its_evidence() -> None:
    moved = apply_changes(
        EMPTY,
        (
            PutVolume(volume=VOLUME.model_copy(update={"owner": "m2"})),
            RecordTransfer(evidence=evidence()),
        ),
    )
    assert apply_changes(moved, (RemoveVolume(name="db"),)).transfers == {}


def test_evidence_must_match_guids_and_final_owner() -> None:
    with_volume = apply_changes(EMPTY, (PutVolume(volume=VOLUME),))
    with pytest.raises(InvalidChange, match="acknowledged snapshot guid 6"):
        apply_changes(
            with_volume,
            (
                SetVolumeOwner(volume="db", owner="m2"),
                RecordTransfer(evidence=evidence(received=6)),
            ),
        )
    with pytest.raises(InvalidChange, match="owned by 'm1'"):
        apply_changes(with_volume, (RecordTransfer(evidence=evidence()),))


def test_a_change_may_not_reach_into_another_namespace() -> None:
    other = Volume(namespace="blog", name="db", dataset="tank/blog/db", owner="m1")
    with pytest.raises(InvalidChange, match="'blog'"):
        apply_changes(EMPTY, (PutVolume(volume=other),))


def test_unknown_volume() -> None:
    with pytest.raises(UnknownVolume, match="shop/db"):
        apply_changes(EMPTY, (SetVolumeOwner(volume="db", owner="m2"),))


def test_referenced_machines() -> None:
    changes = (
        PutVolume(volume=VOLUME),
        SetPlacement(service="web", machine="m3"),
        RecordTransfer(evidence=evidence()),
    )
    assert referenced_machines(changes) == {"m1", "m2", "m3"}
