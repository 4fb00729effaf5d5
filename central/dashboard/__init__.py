"""The operators' dashboard: static HTML/CSS/JS served at ``/dashboard`` (no build step,
nothing fetched from outside: no CDN, no map tiles, no web fonts)."""

from central.dashboard.routes import dashboard_router

__all__ = ["dashboard_router"]
