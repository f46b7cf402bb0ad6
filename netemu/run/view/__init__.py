"""The live view of a run in the browser, and the replay of a finished run (docs/view.md)."""
