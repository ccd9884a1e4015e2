"""ZFS names: ``pool/fs`` datasets, ``pool/fs@snap`` snapshots and ``pool/fs#mark`` bookmarks.

Pure text, no ZFS call: what a name says about the dataset and pool it belongs to, so that the
agent's confinement, the channel programs' pool and the senders' bases all read a name the same
way.
"""

from __future__ import annotations


def dataset_of(name: str) -> str:
    """The dataset a snapshot or bookmark belongs to (a dataset's name is its own)."""
    return name.split("@", 1)[0].split("#", 1)[0]


def pool_of(name: str) -> str:
    """The pool of a dataset, snapshot or bookmark: the first component of its dataset."""
    return dataset_of(name).split("/", 1)[0]


def is_within(name: str, parent: str) -> bool:
    """Whether a dataset, snapshot or bookmark is ``parent`` or lies below it: the test that
    confines a receiver or an agent to its pool or prefix."""
    dataset = dataset_of(name)
    return dataset == parent or dataset.startswith(parent.rstrip("/") + "/")


def short_name(name: str) -> str:
    """What follows the ``@`` of a snapshot or the ``#`` of a bookmark (``snap``, ``mark``)."""
    return name.split("@", 1)[-1] if "@" in name else name.split("#", 1)[-1]


def expand_base(snapshot: str, base: str | None) -> str | None:
    """An incremental base in full: ``@snap`` and ``#mark`` are short for a snapshot or bookmark
    of ``snapshot``'s own dataset, as ``zfs send -i`` takes them; None (or empty) for none."""
    if not base:
        return None
    if base[0] in "@#":
        return dataset_of(snapshot) + base
    return base
