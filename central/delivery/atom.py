"""An Atom (RFC 4287) index of CAP messages, as CAP alert hubs publish them.

Conventions followed (NWS, the WMO register of alerting authorities, Google Public Alerts):
one entry per CAP message, newest first; the entry's ``link rel="alternate"`` with type
``application/cap+xml`` points at the full CAP document; title = CAP headline, published =
``sent``; a handful of CAP fields repeated in the entry under the CAP 1.2 namespace so that
readers can filter without fetching every document.
"""

from __future__ import annotations

import uuid
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from central.cap import CAP_NS

ATOM_NS = "http://www.w3.org/2005/Atom"
ATOM_MEDIA_TYPE = "application/atom+xml"
CAP_MEDIA_TYPE = "application/cap+xml"
_CAP_FIELDS_ALERT = ("status", "msgType", "scope")
_CAP_FIELDS_INFO = ("event", "urgency", "severity", "certainty", "effective", "expires")

ET.register_namespace("", ATOM_NS)
ET.register_namespace("cap", CAP_NS)


@dataclass(frozen=True, slots=True)
class FeedItem:
    identifier: str
    sender: str
    sent: str  # CAP time text
    xml: bytes  # the CAP document


def _a(tag: str) -> str:
    return f"{{{ATOM_NS}}}{tag}"


def _c(tag: str) -> str:
    return f"{{{CAP_NS}}}{tag}"


def _sub(parent: ET.Element, tag: str, text: str | None = None, **attrs: str) -> ET.Element:
    el = ET.SubElement(parent, tag, attrs)
    if text is not None:
        el.text = text
    return el


def rfc3339(cap_time: str) -> str:
    """CAP writes UTC as -00:00; RFC 3339 reads that as 'offset unknown': say +00:00."""
    return cap_time[:-6] + "+00:00" if cap_time.endswith("-00:00") else cap_time


def entry_id(sender: str, identifier: str) -> str:
    """A permanent Atom id: the same CAP message always gets the same one."""
    return f"urn:uuid:{uuid.uuid5(uuid.NAMESPACE_URL, f'cap:{sender}:{identifier}')}"


def render_feed(
    items: Sequence[FeedItem],
    self_url: str,
    cap_url: str,
    title: str = "Sentryline CAP alerts",
    author: str = "Sentryline central",
    now: datetime | None = None,
) -> bytes:
    """The feed document. ``cap_url`` is a template with ``{identifier}``."""
    feed = ET.Element(_a("feed"))
    _sub(feed, _a("id"), f"urn:uuid:{uuid.uuid5(uuid.NAMESPACE_URL, self_url)}")
    _sub(feed, _a("title"), title)
    updated = rfc3339(items[0].sent) if items else _iso(now or datetime.now(UTC))
    _sub(feed, _a("updated"), updated)
    author_el = _sub(feed, _a("author"))
    _sub(author_el, _a("name"), author)
    _sub(feed, _a("link"), rel="self", type=ATOM_MEDIA_TYPE, href=self_url)
    _sub(feed, _a("generator"), "Sentryline")
    for item in items:
        _entry(feed, item, cap_url.format(identifier=item.identifier))
    ET.indent(feed)
    return ET.tostring(feed, encoding="utf-8", xml_declaration=True)


def _entry(feed: ET.Element, item: FeedItem, href: str) -> None:
    alert = ET.fromstring(item.xml)  # our own stored CAP documents
    info = alert.find(_c("info"))

    def text(parent: ET.Element | None, tag: str) -> str | None:
        el = parent.find(_c(tag)) if parent is not None else None
        return el.text if el is not None and el.text else None

    entry = _sub(feed, _a("entry"))
    _sub(entry, _a("id"), entry_id(item.sender, item.identifier))
    _sub(entry, _a("title"), text(info, "headline") or text(info, "event") or item.identifier)
    sent = rfc3339(item.sent)
    _sub(entry, _a("published"), sent)
    _sub(entry, _a("updated"), sent)
    author = _sub(entry, _a("author"))
    _sub(author, _a("name"), text(info, "senderName") or item.sender)
    _sub(entry, _a("link"), rel="alternate", type=CAP_MEDIA_TYPE, href=href)
    summary = text(info, "description") or text(info, "headline")
    if summary:
        _sub(entry, _a("summary"), summary)
    category = text(info, "category")
    if category:
        _sub(entry, _a("category"), term=category)
    _sub(entry, _c("identifier"), item.identifier)
    _sub(entry, _c("sender"), item.sender)
    _sub(entry, _c("sent"), item.sent)
    for tag in _CAP_FIELDS_ALERT:
        if value := text(alert, tag):
            _sub(entry, _c(tag), value)
    for tag in _CAP_FIELDS_INFO:
        if value := text(info, tag):
            _sub(entry, _c(tag), value)
    area = info.find(_c("area")) if info is not None else None
    if value := text(area, "areaDesc"):
        _sub(entry, _c("areaDesc"), value)


def _iso(dt: datetime) -> str:
    return dt.astimezone(UTC).replace(microsecond=0).isoformat()
