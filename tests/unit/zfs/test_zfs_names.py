"""ZFS names read as text: the dataset and pool of a name, its short name, an expanded base."""

from __future__ import annotations

import pytest

from ployz.zfs.names import dataset_of, expand_base, is_within, pool_of, short_name


@pytest.mark.parametrize(("name", "dataset", "pool", "short"), [
    ("tank", "tank", "tank", "tank"),
    ("tank/vol/db", "tank/vol/db", "tank", "tank/vol/db"),
    ("tank/vol@snap", "tank/vol", "tank", "snap"),
    ("tank/vol#mark", "tank/vol", "tank", "mark"),
    ("tank@snap", "tank", "tank", "snap"),
])
def test_a_name_says_its_dataset_pool_and_short_name(name: str, dataset: str, pool: str,
                                                    short: str) -> None:
    assert (dataset_of(name), pool_of(name), short_name(name)) == (dataset, pool, short)


@pytest.mark.parametrize(("base", "full"), [
    (None, None), ("", None),
    ("@a", "tank/vol@a"), ("#m", "tank/vol#m"),
    ("tank/other@a", "tank/other@a"),
])
def test_a_short_base_is_of_the_sent_snapshots_dataset(base: str | None,
                                                        full: str | None) -> None:
    assert expand_base("tank/vol@b", base) == full


@pytest.mark.parametrize(("name", "parent", "within"), [
    ("tank", "tank", True), ("tank/vol@s", "tank", True), ("tank/a/b#m", "tank/a/", True),
    ("tank2/vol", "tank", False), ("tankvol", "tank", False), ("other/tank", "tank", False),
])
def test_within_means_the_parent_or_below_it(name: str, parent: str, within: bool) -> None:
    assert is_within(name, parent) is within
