"""Reading configuration: the one line-tracking YAML loader and field validator used by
scenarios, app manifests, agent configs and ``expect:`` sections."""
