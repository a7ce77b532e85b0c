"""What a message's state is called on the pages (and which states are still in flight).

The one definition: the pages' filters and the templates' badges (Jinja globals ``state_labels`` and
``in_flight_states``, see ``app/web/templating.py``) read these.
"""

from __future__ import annotations

from app.messaging.models import MessageState
from app.messaging.state import IN_FLIGHT

S = MessageState
STATE_LABELS: dict[MessageState, str] = {
    S.PENDING: "Pending",
    S.SENDING: "Sending",
    S.SENT: "Sent",
    S.DELIVERED_SERVICE: "Delivered to service",
    S.DELIVERED_USER: "Delivered",
    S.READ: "Read",
    S.REPLIED: "Replied",
    S.FAILED: "Failed",
    S.RECEIVED: "Received",
}

__all__ = ["IN_FLIGHT", "STATE_LABELS"]
