"""Tests that need the VM's kernel (kernel WireGuard, ZFS) but no sandbox cluster: each builds
the little it needs, such as a bed of network namespaces (:mod:`tests.vm.netbed`)."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from tests.vm.netbed import BedMachine, build, tear_down


@pytest.fixture(scope="module")
def netbed(in_vm: None) -> Iterator[Callable[[list[BedMachine]], None]]:
    """Builds a bed of the given machines; it is torn down after the module, also when the
    build itself failed half-way."""
    built: list[BedMachine] = []

    def build_bed(machines: list[BedMachine]) -> None:
        built.extend(machines)
        build(machines)

    try:
        yield build_bed
    finally:
        tear_down(built)
