"""Planning, without I/O beyond reading input files: scenarios, orbits, the link schedule,
link models and the contact plan that every other layer reads."""
