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
