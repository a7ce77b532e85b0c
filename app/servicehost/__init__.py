"""The host side of the plugins: the registry and its health check (``service_status``), the
per-organization credentials service, the catalog of services, and the re-check job.

The plugin SDK (``app.plugins``: ``base``, the built-ins, ``netguard``, ``transport``, ``crypto``) imports
nothing of the host; this package builds on it."""
