"""Migrations: moving a service and its ZFS volumes to another machine (``ployzctl migrate``).

    ref = parse_service_ref("shop/db")                                  # .ref
    plan = plan_migration(cp, agents, ref, "machine-b")   # .plan: preview, changes nothing
    render(plan.manifest)                                  # render-manifest
    migrate(cp, agents, ref, "machine-b", emit=print)     # .apply

A migration is a deploy run of kind ``migrate`` whose manifest is the namespace as committed
with the service moved (:func:`ployz.deploy.current.move_service`); see :mod:`.apply` for its
phases and :mod:`.settle` for how it is rolled back or finished from its record.
"""
