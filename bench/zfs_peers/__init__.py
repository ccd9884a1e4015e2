"""Real ZFS replication side by side, inside the ZFS VM: our engine between two pools against
``zfs send | zfs recv``, the same with mbuffer, syncoid, bzfs and zfs-autobackup, on the same
snapshots. ``python -m ployz.sandbox.vm run -- python -m bench.zfs_peers`` runs it; the results
land in ``$PLOYZ_REPORTS/bench-zfs-peers.json``."""
