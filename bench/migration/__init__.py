"""The cutover window of ``ployzctl migrate apply`` against a stop-first migration, in the
sandbox cluster inside the ZFS VM."""
