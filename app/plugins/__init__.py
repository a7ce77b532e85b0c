"""The plugin SDK: the protocol (``base``), the built-in plugins (``log``, ``smtp``, ``webhook``) and their
tools (``netguard``, ``transport``, ``crypto``). It imports nothing of the host (``app.servicehost`` loads
and runs the plugins): an import-linter contract in pyproject.toml keeps it so."""
