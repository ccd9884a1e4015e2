"""Deploys: the manifest, the plan against the control plane's facts, and their execution.

    manifest = load_manifest("deploy.toml")        # ployz.deploy.manifest
    plan = make_plan(manifest, cp)                 # ployz.deploy.plan: changes nothing
    deploy(cp, manifest, AgentDirectory(key), holder="operator@laptop")   # ployz.deploy.apply

The package re-exports nothing: importing any of its modules (the membership commands' errors,
say) would otherwise import all of them, the agent client and the Docker SDK with them, and on a
slow machine that costs every ``ployzctl`` command seconds.
"""
