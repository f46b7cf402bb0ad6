"""After (or beside) a run: metrics, the report, expectations and JUnit, packet captures."""
