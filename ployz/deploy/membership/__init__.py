"""Cluster membership: what a machine needs to join a cluster and to run its part of it.

- ``tokens``: the signed, expiring join token ``ployzctl machine invite`` prints and
  ``ployzctl machine join`` consumes.
- ``daemons``: the machine's long-running processes (``ployzd``, the NATS server), as systemd
  units where systemd runs the machine, as detached processes elsewhere.
"""
