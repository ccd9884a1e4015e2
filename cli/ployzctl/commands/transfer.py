"""``ployzctl transfer``: move one stream (a file, or a ZFS snapshot) to another machine through
the transfer engine, for tuning and scripting.

    ployzctl transfer keygen DIR
    ployzctl transfer receive --listen HOST:PORT (--dataset POOL/DS | --file PATH) --trust PUB
                              [--key PRIV]
    ployzctl transfer send (--snapshot POOL/DS@SNAP [--base SNAP] | --file PATH) --to HOST:PORT
                           --key PRIV [--codec auto|zstd|none] [--bwlimit RATE] [--encrypt]
                           [--receiver-key PUB] [--transfer-id ID]
    ployzctl transfer tune --to HOST:PORT --key PRIV [--bwlimit RATE] [--sample FILE]

The sender signs itself a short-lived ticket with ``--key`` for the target the receiver
announces, and proves it holds that key on every connection; the receiver accepts it only if
``--trust`` is the matching public key. Every frame is authenticated; ``--encrypt`` also hides
the stream. A receiver given ``--key`` proves itself to the sender; ``--receiver-key`` makes
the sender insist on it. The same send command run again resumes: its transfer id is derived
from the source and the destination.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import socket
import sys
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ployz.transfer.addresses import parse_address
from ployz.transfer.errors import TransferError
from ployz.transfer.files import FileSink, FileSource
from ployz.transfer.keys import BadKey, generate_keypair, load_private_key, load_public_key
from ployz.transfer.protocol import DEFAULT_FRAME_SIZE
from ployz.transfer.receiver import Receiver, ReceiverTimeouts
from ployz.transfer.sender import RetryPolicy, Sender, SenderTimeouts
from ployz.transfer.units import parse_rate
from ployzctl.commands import SUMMARIES
from ployzctl.output import fail, print_json
from ployzctl.progress_bar import ProgressBar


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser("transfer", help=SUMMARIES["transfer"])
    commands = parser.add_subparsers(dest="transfer_command", required=True,
                                     metavar="SUBCOMMAND")

    keygen = commands.add_parser("keygen", help="write a ticket-signing key pair (PEM)")
    keygen.add_argument("dir", type=Path, metavar="DIR")
    keygen.add_argument("--json", action="store_true", help="print the paths as JSON")
    keygen.set_defaults(func=_keygen)

    receive = commands.add_parser("receive", help="serve one incoming transfer, then exit")
    receive.add_argument("--listen", required=True, metavar="HOST:PORT")
    target = receive.add_mutually_exclusive_group(required=True)
    target.add_argument("--dataset", metavar="POOL/DS", help="receive a ZFS stream into this")
    target.add_argument("--file", type=Path, metavar="PATH", help="receive into this file")
    receive.add_argument("--trust", required=True, type=Path, metavar="PUBKEY",
                         help="public key (PEM) whose tickets are accepted")
    receive.add_argument("--key", type=Path, metavar="PRIVKEY",
                         help="private key (PEM) with which this receiver proves itself")
    receive.add_argument("--linger", type=float, default=60.0, metavar="SECONDS",
                         help="after committing without the sender's acknowledgement, answer "
                              "its reconnection with the outcome for this long")
    receive.add_argument("--handshake-timeout", type=float, default=10.0, metavar="SECONDS")
    receive.add_argument("--idle-timeout", type=float, default=60.0, metavar="SECONDS")
    receive.add_argument("--wait-timeout", type=float, default=None, metavar="SECONDS",
                         help="give up when no sender connects for this long")
    receive.add_argument("--json", action="store_true", help="print a JSON summary line")
    receive.set_defaults(func=_receive)

    send = commands.add_parser("send", help="send one stream; exit 0 once it is committed")
    source = send.add_mutually_exclusive_group(required=True)
    source.add_argument("--snapshot", metavar="POOL/DS@SNAP", help="send this ZFS snapshot")
    source.add_argument("--file", type=Path, metavar="PATH", help="send this file")
    send.add_argument("--base", metavar="SNAP_OR_BOOKMARK",
                      help="incremental base for --snapshot (@snap or #bookmark)")
    send.add_argument("--raw", action="store_true", help="raw send (encrypted datasets)")
    send.add_argument("--to", required=True, metavar="HOST:PORT")
    send.add_argument("--key", required=True, type=Path, metavar="PRIVKEY",
                      help="private key (PEM) that signs the ticket")
    send.add_argument("--encrypt", action="store_true",
                      help="encrypt the stream (links outside the WireGuard overlay); every "
                           "frame is authenticated either way")
    send.add_argument("--receiver-key", type=Path, metavar="PUBKEY",
                      help="require the receiver to prove it holds this key (its --key)")
    send.add_argument("--transfer-id", metavar="ID",
                      help="default: derived from the source and --to, so that the same "
                           "command run again resumes")
    send.add_argument("--codec", choices=("auto", "zstd", "none"), default="auto")
    send.add_argument("--bwlimit", metavar="RATE", help="bytes per second, e.g. 100M or 1GiB")
    send.add_argument("--frame-size", type=int, default=DEFAULT_FRAME_SIZE, metavar="BYTES")
    send.add_argument("--retries", type=int, default=8, metavar="N",
                      help="connection attempts in a row without progress before giving up")
    send.add_argument("--backoff", type=float, default=0.5, metavar="SECONDS",
                      help="first delay between attempts; doubles up to --max-backoff")
    send.add_argument("--max-backoff", type=float, default=10.0, metavar="SECONDS")
    send.add_argument("--idle-timeout", type=float, default=60.0, metavar="SECONDS")
    send.add_argument("--json", action="store_true", help="print a JSON summary line")
    send.set_defaults(func=_send)

    tune = commands.add_parser("tune", help="probe the link and the CPU; recommend settings")
    tune.add_argument("--to", required=True, metavar="HOST:PORT",
                      help="a `transfer receive --file` waiting for the link probe")
    tune.add_argument("--key", required=True, type=Path, metavar="PRIVKEY")
    tune.add_argument("--bwlimit", metavar="RATE", help="probe the link at most at this rate")
    tune.add_argument("--sample", type=Path, metavar="FILE",
                      help="data like what will be sent (compression ratio); first 8 MiB")
    tune.add_argument("--level", type=int, metavar="N", help="consider only this zstd level")
    tune.add_argument("--json", action="store_true", help="print the result as JSON")
    tune.set_defaults(func=_tune)


def _address(text: str) -> tuple[str, int]:
    """A ``--listen`` or ``--to`` address, refused in this command's own words."""
    try:
        return parse_address(text)
    except ValueError:
        raise ValueError(f"invalid address {text!r}: expected HOST:PORT") from None


def _link(args: argparse.Namespace) -> tuple[tuple[str, int], Ed25519PrivateKey, float]:
    """What ``send`` and ``tune`` read alike: ``--to``, the signing ``--key`` and ``--bwlimit``
    (0: unlimited)."""
    address, key = _address(args.to), load_private_key(args.key)
    return address, key, parse_rate(args.bwlimit) if args.bwlimit else 0.0


def _keygen(args: argparse.Namespace) -> int:
    try:
        private, public = generate_keypair(args.dir)
    except (BadKey, OSError) as exc:
        return fail(str(exc))
    if args.json:
        print_json({"private_key": str(private), "public_key": str(public)})
    else:
        print(f"private key: {private}\npublic key:  {public}")
    return 0


def _receive(args: argparse.Namespace) -> int:
    try:
        host, port = _address(args.listen)
        trusted = load_public_key(args.trust)
        key = load_private_key(args.key) if args.key else None
    except (OSError, ValueError) as exc:
        return fail(str(exc), status=2)
    try:
        sink: Any
        if args.dataset:
            from ployz.transfer.zfs_endpoints import ZfsSink
            sink = ZfsSink(args.dataset)
        else:
            sink = FileSink(args.file)
        listener = socket.create_server((host, port))
    except (OSError, TransferError) as exc:
        return fail(str(exc))
    with listener:
        bound = listener.getsockname()
        print(f"ployzctl: listening on {bound[0]}:{bound[1]}", file=sys.stderr, flush=True)
        timeouts = ReceiverTimeouts(handshake=args.handshake_timeout, idle=args.idle_timeout,
                                    wait=args.wait_timeout, linger=args.linger)
        try:
            result = Receiver(listener, sink, trusted, timeouts=timeouts, key=key).serve()
        except TransferError as exc:
            return fail(f"transfer failed: {exc}")
    if args.json:
        print_json(_summary(result.summary()))
    else:
        print(f"received {result.bytes} bytes in {result.seconds:.1f} s "
              f"({result.resumes} resumes): {result.evidence}")
    return 0


def _send(args: argparse.Namespace) -> int:
    try:
        address, key, bwlimit = _link(args)
        receiver_key = load_public_key(args.receiver_key) if args.receiver_key else None
        if args.retries < 1:
            raise ValueError("--retries must be at least 1")
        if args.base and not args.snapshot:
            raise ValueError("--base needs --snapshot")
    except (OSError, ValueError) as exc:
        return fail(str(exc), status=2)
    bar = ProgressBar(sys.stderr) if sys.stderr.isatty() and not args.json else None
    try:
        source: Any
        if args.snapshot:
            from ployz.transfer.zfs_endpoints import ZfsSource
            source = ZfsSource(args.snapshot, base=args.base, raw=args.raw)
        else:
            source = FileSource(args.file)
        transfer_id = args.transfer_id or _derived_transfer_id(source, args)
        sender = Sender(source, address, key=key, codec=args.codec, frame_size=args.frame_size,
                        bwlimit=bwlimit, encrypt=args.encrypt, receiver_key=receiver_key,
                        transfer_id=transfer_id,
                        retry=RetryPolicy(args.retries, args.backoff, args.max_backoff),
                        timeouts=SenderTimeouts(idle=args.idle_timeout),
                        progress=bar.update if bar else None)
        result = sender.send()
    except (TransferError, ValueError) as exc:
        return fail(f"transfer failed: {exc}")
    finally:
        if bar:
            bar.end()
    if args.json:
        print_json(_summary(result.summary()))
    else:
        print(f"sent {result.bytes} bytes ({result.wire_bytes} on the wire) in "
              f"{result.seconds:.1f} s, {result.resumes} resumes: {result.evidence}")
    return 0


def _tune(args: argparse.Namespace) -> int:
    from ployz.transfer.tuning import SAMPLE_BYTES, tune
    try:
        address, key, bwlimit = _link(args)
        sample = args.sample.read_bytes()[:SAMPLE_BYTES] if args.sample else None
    except (OSError, ValueError) as exc:
        return fail(str(exc), status=2)
    try:
        result = tune(address, key, sample=sample, bwlimit=bwlimit, level=args.level)
    except (TransferError, RuntimeError, OSError) as exc:
        return fail(f"tuning failed: {exc}")
    if args.json:
        print_json(result)
    else:
        m, r = result["measured"], result["recommended"]
        print(f"link {m['link_MB_per_s']} MB/s, rtt {m['rtt_ms']} ms; framing "
              f"{m['framing_MB_per_s']} MB/s per stream")
        for probe in m["zstd"]:
            print(f"zstd level {probe['level']}: {probe['MB_per_s_per_thread']:.1f} MB/s per "
                  f"thread, ratio {probe['ratio']:.2f}")
        print(f"recommended: --codec {r['codec']}" + (f" (level {r['level']}, {r['threads']} "
              f"threads)" if r["codec"] == "zstd" else "")
              + f", frame size {r['frame_size']}, socket buffer {r['socket_buffer']}; "
              f"expect about {r['expected_MB_per_s']} MB/s")
    return 0


def _derived_transfer_id(source: Any, args: argparse.Namespace) -> str:
    """The same source sent to the same place gets the same id, so that a command killed
    midway and run again finds its receiver's partial result and resumes it. A file that
    changed (size, modification time, inode) is another transfer."""
    if args.file:
        st = os.stat(args.file)
        identity: dict[str, Any] = {"file": os.path.abspath(args.file), "dev": st.st_dev,
                                    "ino": st.st_ino, "size": st.st_size,
                                    "mtime_ns": st.st_mtime_ns}
    else:
        info = source.stream_info()
        identity = {key: info.get(key) for key in ("toname", "toguid", "fromguid", "raw")}
    identity["to"] = args.to
    digest = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()
    return f"cli-{digest[:32]}"


def _summary(summary: dict[str, Any]) -> dict[str, Any]:
    """The scripting contract: the engine's summary plus, for ZFS, the received guid at the
    top level."""
    guid = summary["committed"].get("guid")
    if guid is not None:
        summary["guid"] = guid
    return summary
