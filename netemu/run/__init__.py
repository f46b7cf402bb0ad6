"""Running a scenario: the scenario runner, apps inside hosts, the telemetry broker."""
