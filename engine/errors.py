class EngineError(Exception):
    """Anything the engine cannot do, with a one-line message a user can act on."""
