"""Planning, without I/O beyond reading input files: scenarios, orbits, the link schedule,
link models, the contact plan that every other layer reads, and where a plan comes from
(a scenario or a plan file: :mod:`netemu.plan.source`)."""
