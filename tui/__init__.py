"""The terminal UI: a Textual app with one widget per view, fed by the engine's runner."""
