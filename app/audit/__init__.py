"""The audit log: who changed what, recorded in the transaction of the change (decision 0027).

Importing the package installs the listener (:mod:`app.audit.watch`) that records every create,
update and delete of the audited tables; :func:`app.audit.services.record` records the rest
(logins, credits added…)."""

from app.audit import watch as _watch  # noqa: F401  (installs the flush listener)
