"""Training procedures: what trains replicas on a landscape (the landscape only gives values and
derivatives). See :mod:`study.procedures.base` for the protocol and :mod:`.registry` for the names."""
