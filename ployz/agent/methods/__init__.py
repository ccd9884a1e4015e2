"""RPC method groups of the agent; each module exposes ``register(registry, context)``."""
