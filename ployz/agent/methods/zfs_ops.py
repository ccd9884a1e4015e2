"""``zfs.*``: the ZFS operations a migration asks of a machine, delegated to :mod:`ployz.zfs`.

Every name is confined to the agent's pool: a request naming a dataset elsewhere is refused
before ZFS is touched. Results are plain data (snapshot lists, property dicts, resume tokens).
"""

from __future__ import annotations

import errno

from ployz import zfs
from ployz.agent.api import PoolCapacity, Props, SetProps, ZfsApi
from ployz.agent.context import AgentContext
from ployz.agent.dispatch import MethodRegistry
from ployz.agent.errors import NoPoolConfigured, OutsidePool
from ployz.zfs.kstats import bytes_written
from ployz.zfs.names import is_within


def pool_capacity(pool: str) -> PoolCapacity:
    """Free and used bytes of the pool, from its root dataset."""
    props = zfs.get(pool, ["available", "used"])
    return PoolCapacity(pool=pool, free=props["available"], used=props["used"])


def confine(pool: str | None, *names: str) -> None:
    """Refuses any dataset, snapshot or bookmark outside the agent's pool."""
    if pool is None:
        raise NoPoolConfigured()
    for name in names:
        if not is_within(name, pool):
            raise OutsidePool(name, pool)


class ZFSMethods(ZfsApi):
    def __init__(self, pool: str | None) -> None:
        self._pool = pool

    def _confined(self, *names: str) -> None:
        confine(self._pool, *names)

    def capacity(self) -> PoolCapacity:
        self._confined()
        assert self._pool is not None
        return pool_capacity(self._pool)

    def create(
        self,
        dataset: str,
        quota: int | None = None,
        mountpoint: str | None = None,
        props: SetProps | None = None,
    ) -> Props:
        """Creates a filesystem, and mounts it when ``mountpoint`` is given. If the mount
        fails the new dataset is destroyed again, so a failed call leaves nothing behind."""
        self._confined(dataset)
        all_props: SetProps = dict(props or {})
        if quota is not None:
            all_props["quota"] = quota
        if mountpoint is not None:
            all_props["mountpoint"] = mountpoint
        zfs.create(dataset, all_props)
        if mountpoint is not None:
            try:
                zfs.mount(dataset, mountpoint)
            except BaseException:
                zfs.destroy(dataset)
                raise
        return zfs.get(dataset, ["guid", "quota", "used", "available", "mountpoint"])

    def mount(self, dataset: str, mountpoint: str) -> None:
        self._confined(dataset)
        zfs.mount(dataset, mountpoint)

    def unmount(self, dataset: str) -> None:
        self._confined(dataset)
        zfs.unmount(dataset)

    def exists(self, name: str) -> bool:
        self._confined(name)
        return zfs.exists(name)

    def get(self, name: str, props: list[str]) -> Props:
        self._confined(name)
        return zfs.get(name, props)

    def written(self, datasets: list[str]) -> int:
        """Bytes written to the datasets since their latest snapshots, up to this moment: their
        pools are synced first, so a write rate sampled from two calls is not a txg's burst."""
        self._confined(*datasets)
        for pool in sorted({d.split("/")[0] for d in datasets}):
            zfs.sync(pool)
        return sum(int(zfs.get(d, ["written"])["written"] or 0) for d in datasets)

    def bytes_written(self, datasets: list[str]) -> int | None:
        """Bytes written to the datasets through their filesystems, overwrites included, by a
        counter that only grows while they stay mounted: two readings give a write rate. An
        unmounted dataset counts nothing (nobody writes to it); None when a mounted one has no
        counter (a ZFS before 0.8)."""
        self._confined(*datasets)
        total = 0
        for dataset in datasets:
            counted = bytes_written(dataset)
            if counted is None:
                if not zfs.exists(dataset):
                    raise zfs.DatasetNotFound(errno.ENOENT, dataset, "does not exist")
                if zfs.mounts_of(dataset):
                    return None
            total += counted or 0
        return total

    def snapshot(self, snapshots: list[str]) -> None:
        """Takes the snapshots atomically (one transaction group)."""
        self._confined(*snapshots)
        zfs.snapshot(snapshots)

    def snapshots(self, dataset: str) -> list[zfs.Snapshot]:
        self._confined(dataset)
        return zfs.snapshots(dataset)

    def hold(self, holds: dict[str, str]) -> None:
        """Places user holds: snapshot -> tag."""
        self._confined(*holds)
        zfs.hold(holds)

    def release(self, holds: dict[str, list[str]]) -> None:
        self._confined(*holds)
        zfs.release(holds)

    def holds(self, snapshot: str) -> dict[str, int]:
        self._confined(snapshot)
        return zfs.holds(snapshot)

    def destroy_snapshots(self, snapshots: list[str], defer: bool = False) -> None:
        self._confined(*snapshots)
        zfs.destroy_snapshots(snapshots, defer=defer)

    def destroy(self, dataset: str) -> None:
        self._confined(dataset)
        zfs.destroy(dataset)

    def rollback(self, dataset: str, snapshot: str | None = None) -> str:
        self._confined(dataset, *([snapshot] if snapshot else []))
        return zfs.rollback(dataset, snapshot)

    def resume_token(self, dataset: str) -> zfs.ResumeToken | None:
        self._confined(dataset)
        return zfs.resume_token(dataset)

    def abort_receive(self, dataset: str) -> None:
        self._confined(dataset)
        zfs.abort_receive(dataset)

    def send_space(self, snapshot: str, base: str | None = None) -> int:
        """Estimated bytes of a full (or, with ``base``, incremental) send."""
        self._confined(snapshot, *([base] if base else []))
        return zfs.send_space(snapshot, base)


_MUTATING = (
    "create", "mount", "unmount", "snapshot", "hold", "release", "destroy_snapshots", "destroy",
    "rollback", "abort_receive",
)
_READING = ("capacity", "exists", "get", "written", "bytes_written", "snapshots", "holds",
            "resume_token", "send_space")


def register(registry: MethodRegistry, context: AgentContext) -> None:
    methods = ZFSMethods(context.pool)
    registry.register_errors(
        zfs.ZFSError, lambda exc: {"errno": exc.errno, "name": exc.name}
    )
    for name in _MUTATING + _READING:
        registry.register(f"zfs.{name}", getattr(methods, name), mutating=name in _MUTATING)
