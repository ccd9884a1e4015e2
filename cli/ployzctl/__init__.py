"""The ``ployzctl`` command line: argument parsing and output only; the logic lives in ployz."""
