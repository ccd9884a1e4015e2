"""Reading a dataset's write counter out of its objset kstat (the real files are read in the VM
by tests/zfs; here the lookup by name, the parsing and the absent cases)."""

from __future__ import annotations

from pathlib import Path

import pytest

from ployz.zfs.errors import ZFSError
from ployz.zfs.kstats import bytes_written, parse

KSTAT = """\
53 1 0x01 7 2160 7123412806 98176012371
name                            type data
dataset_name                    7    {name}
writes                          4    12
nwritten                        4    {nwritten}
reads                           4    3
nread                           4    1024
nunlinks                        4    0
nunlinked                       4    0
"""


def kstat_dir(tmp_path: Path, *objsets: tuple[str, str]) -> Path:
    pool = tmp_path / "tank"
    pool.mkdir()
    for index, (name, nwritten) in enumerate(objsets):
        (pool / f"objset-0x{index + 0x36:x}").write_text(KSTAT.format(name=name,
                                                                      nwritten=nwritten))
    (pool / "txgs").write_text("not an objset\n")
    return tmp_path


def test_the_dataset_is_found_by_its_name_among_the_pools_objsets(tmp_path: Path) -> None:
    root = kstat_dir(tmp_path, ("tank/a", "100"), ("tank/b", "786432"))
    assert bytes_written("tank/b", root) == 786432
    assert bytes_written("tank/a", root) == 100


def test_a_dataset_without_statistics_is_none(tmp_path: Path) -> None:
    root = kstat_dir(tmp_path, ("tank/a", "100"))
    assert bytes_written("tank/unmounted", root) is None
    assert bytes_written("other/a", root) is None


def test_an_unreadable_counter_names_the_dataset_and_the_file(tmp_path: Path) -> None:
    root = kstat_dir(tmp_path, ("tank/a", "many"))
    with pytest.raises(ZFSError, match=r"tank/a: unreadable kernel statistics in .*objset-0x36"):
        bytes_written("tank/a", root)


def test_parse_keeps_the_rows_after_the_headers() -> None:
    rows = parse(KSTAT.format(name="tank/with space", nwritten="7"))
    assert rows["dataset_name"] == "tank/with space"
    assert rows["nwritten"] == "7"
    assert "name" not in rows
