"""Local test beds: a VM with the real ZFS kernel module (``vm``) and, on it, a sandbox cluster of
machines made of network namespaces."""
