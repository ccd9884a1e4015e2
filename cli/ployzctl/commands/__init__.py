"""Command groups of ployzctl, one module each."""
