"""Delivery channels of central: webhooks, server-sent events and the CAP Atom feed."""

from central.delivery.delivery import Delivery
from central.delivery.hub import Event, EventHub
from central.delivery.routes import feeds_router, webhooks_router
from central.delivery.webhooks import RetryPolicy

__all__ = ["Delivery", "Event", "EventHub", "RetryPolicy", "feeds_router", "webhooks_router"]
