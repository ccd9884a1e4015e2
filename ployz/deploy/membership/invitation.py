"""``ployzctl machine invite``: a join token for one new machine.

The token is signed with the operator key the cluster trusts, names an invite record that the
control plane marks used at the first join (single use), expires with that record, and carries
what the new machine needs before it is a member: the control plane's address and credentials,
the trust anchor, and the overlay's public facts (range, peers' keys and endpoints).
"""

from __future__ import annotations

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ployz.control import ControlPlane
from ployz.deploy.membership.errors import MembershipError
from ployz.deploy.membership.tokens import JoinToken, TokenPeer, issue
from ployz.transfer.keys import public_key_text

DEFAULT_TTL_S = 3600.0


def invite(cp: ControlPlane, key: Ed25519PrivateKey, control_url: str,
           ttl_s: float = DEFAULT_TTL_S) -> str:
    """A new join token. ``control_url`` is the control plane's URL as the new machine will use
    it (with its credentials): the one this command reached it at."""
    cluster = cp.get_cluster()
    if public_key_text(key.public_key()) not in cluster.trust:
        raise MembershipError(f"this operator key is not trusted by cluster {cluster.name!r}: "
                              "use the key `machine init` made (PLOYZ_KEY or --key)")
    record = cp.create_invite(ttl_s)
    peers = tuple(TokenPeer(id=m.id, overlay_ip=m.overlay_ip, wireguard_key=m.wireguard_key,
                            endpoint=m.endpoint)
                  for m in sorted(cp.list_machines(), key=lambda m: m.id)
                  if m.wireguard_key and m.endpoint)
    token = JoinToken(version=1, cluster=cluster.name, invite=record.id,
                      expires=int(record.expires.timestamp()), control=control_url,
                      trust=cluster.trust, overlay=cluster.overlay, peers=peers)
    return issue(token, key)
