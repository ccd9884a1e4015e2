"""The transfer engine: authenticated, resumable, verified streams between machines.

A ``Sender`` reads a ``Source`` (a file, a ZFS snapshot) and a ``Receiver`` writes a ``Sink`` (a
file, a ZFS dataset); between them runs the protocol of ``ployz.transfer.protocol`` over TCP,
with the per-byte work done by the native data path in ``ployz._xfer``.

Names are imported from their modules: the package imports none of them, so reaching one
module does not load the others (under emulation each import adds seconds to every ployzctl
start)."""
