"""Command groups of ployzctl, one module each.

``SUMMARIES`` is every group's one-line help, kept here rather than in the group modules so that
``ployzctl`` can list all groups while importing only the one a command line uses.
"""

SUMMARIES: dict[str, str] = {
    "agent": "the machine agent",
    "deploy": "deploy a manifest (deploy.toml)",
    "machine": "the cluster's machines",
    "migrate": "move a service and its volumes to another machine",
    "service": "deployed services",
    "transfer": "send or receive one stream",
}


def rate(text: str) -> float:
    """An argparse type: a bandwidth like ``50M`` or ``1GiB`` in bytes per second."""
    import argparse

    from ployz.transfer.units import parse_rate

    try:
        return parse_rate(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
