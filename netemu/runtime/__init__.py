"""What a running emulation shares between processes: the ``NETEMU_*`` environment, the
run directory, the scenario clock and the telemetry client."""
