"""CAP 1.2 (OASIS Common Alerting Protocol) builder, parser and rule checker.

Pure functions over stdlib ElementTree. The XSD (shared/standards/CAP-v1.2.xsd) checks element
order, enumerations and the time pattern; `check_cap_rules` covers the spec rules it cannot
express (restriction/addresses, identifier characters, references, circle/polygon syntax) plus
Sentryline's own rule that every <info> carries exactly one CN_WARNING_LEVEL.
"""

from __future__ import annotations

import math
import re
import xml.etree.ElementTree as ET
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal

Level = Literal["blue", "yellow", "orange", "red"]
MsgType = Literal["Alert", "Update", "Cancel"]

CAP_NS = "urn:oasis:names:tc:emergency:cap:1.2"
CAP_CODE = "SENTRYLINE-1.0"
EVENT_CODE_NAME = "SENTRYLINE_EVENT"
LEVEL_PARAM = "CN_WARNING_LEVEL"

# level -> (severity, urgency, certainty, responseType); see shared/domain/warning-rules.md.
LEVEL_PROFILE: dict[str, tuple[str, str, str, str]] = {
    "red": ("Extreme", "Immediate", "Observed", "Execute"),
    "orange": ("Severe", "Immediate", "Observed", "Execute"),
    "yellow": ("Moderate", "Expected", "Likely", "Prepare"),
    "blue": ("Minor", "Expected", "Possible", "Monitor"),
}
# Internal alarms (sensor fault, sensor offline): nothing is known about the hazard itself.
INTERNAL_PROFILE: tuple[str, str, str, str] = ("Unknown", "Unknown", "Unknown", "Assess")

_STATUSES = frozenset({"Actual", "Exercise", "System", "Test", "Draft"})
_MSG_TYPES = frozenset({"Alert", "Update", "Cancel"})
_CATEGORIES = frozenset(
    {"Geo", "Met", "Safety", "Security", "Rescue", "Fire", "Health", "Env", "Transport"}
    | {"Infra", "CBRNE", "Other"}
)
_CERTAINTIES = frozenset({"Observed", "Likely", "Possible", "Unlikely", "Unknown"})
_SEVERITIES = frozenset({"Extreme", "Severe", "Moderate", "Minor", "Unknown"})
_URGENCIES = frozenset({"Immediate", "Expected", "Future", "Past", "Unknown"})
_RESPONSE_TYPES = frozenset(
    {"Shelter", "Evacuate", "Prepare", "Execute", "Avoid", "Monitor", "Assess", "AllClear", "None"}
)
_MAX_OFFSET = timedelta(hours=14)  # xs:dateTime timezone range

# CAP 1.2 §3.2.1: identifier/sender "MUST NOT include spaces, commas or restricted characters".
_ILLEGAL_ID = re.compile(r"[\s,<&]")
_CAP_TIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[-+]\d\d:\d\d", re.ASCII)
# Plain decimal degrees: float() would also take 'nan', 'inf' and '1e3', which CAP does not.
_DECIMAL = r"[-+]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)"
_POINT = re.compile(rf"({_DECIMAL}),({_DECIMAL})")
_CIRCLE = re.compile(rf"({_DECIMAL}),({_DECIMAL})\s+({_DECIMAL})")
_LANGUAGE = re.compile(r"[A-Za-z]{1,8}(?:-[A-Za-z0-9]{1,8})*")
# Characters XML 1.0 cannot carry at all (controls, surrogates, U+FFFE/FFFF).
_NON_XML = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


@dataclass(frozen=True, slots=True)
class CapArea:
    description: str
    lat: float | None = None
    lon: float | None = None
    radius_km: float = 0.1
    # (lat, lon) pairs; the builder closes the ring if it is not closed. Wins over lat/lon.
    polygon: tuple[tuple[float, float], ...] | None = None


@dataclass(frozen=True, slots=True)
class CapReference:
    sender: str
    identifier: str
    sent: datetime  # timezone-aware


@dataclass(frozen=True, slots=True)
class CapMessage:
    identifier: str
    sender: str
    sent: datetime  # aware
    msg_type: MsgType
    level: Level
    event: str  # e.g. "Combustible gas leak"
    headline: str
    description: str
    effective: datetime  # aware: the EVENT time the condition was met
    area: CapArea
    parameters: tuple[tuple[str, str], ...] = ()  # extra valueName/value pairs, kept in order
    references: tuple[CapReference, ...] = ()
    incidents: str | None = None
    category: str = "Safety"
    status: str = "Actual"
    restriction: str = "Sentryline operators and emergency services"
    language: str = "en-US"
    sender_name: str = "Sentryline central fusion-and-warning service"
    instruction: str | None = None
    onset: datetime | None = None
    expires: datetime | None = None
    certainty: str | None = None  # default from the level table
    response_type: str | None = None  # default from the level table
    severity: str | None = None  # default from the level table
    urgency: str | None = None  # default from the level table
    note: str | None = None


# --------------------------------------------------------------------------- formatting


def format_cap_time(dt: datetime) -> str:
    """'YYYY-MM-DDThh:mm:ss±hh:mm', UTC as '-00:00' (CAP forbids 'Z'); microseconds dropped."""
    offset = dt.utcoffset()
    if offset is None:
        raise ValueError(f"CAP times must be timezone-aware, got naive {dt!r}")
    # CAP offsets are whole minutes within ±14:00; anything else keeps its instant as UTC.
    if offset % timedelta(minutes=1) or abs(offset) > _MAX_OFFSET:
        dt, offset = dt.astimezone(UTC), timedelta(0)
    minutes = int(offset.total_seconds()) // 60
    sign = "+" if minutes > 0 else "-"
    hh, mm = divmod(abs(minutes), 60)
    return f"{dt.replace(microsecond=0, tzinfo=None).isoformat()}{sign}{hh:02d}:{mm:02d}"


def format_references(refs: Iterable[CapReference]) -> str:
    """Space-separated 'sender,identifier,sent' triples."""
    parts = []
    for ref in refs:
        _require_cap_id("reference sender", ref.sender)
        _require_cap_id("reference identifier", ref.identifier)
        parts.append(f"{ref.sender},{ref.identifier},{format_cap_time(ref.sent)}")
    return " ".join(parts)


def make_identifier(sender_prefix: str, when: datetime, serial: int) -> str:
    """'SL-<prefix>-<UTC yyyymmddThhmmss>-<serial:06d>': unique per (prefix, second, serial).

    UTC, not local wall time: a DST fall-back cannot repeat a timestamp, and the caller's zone
    does not change the identifier of an instant.
    """
    _require_cap_id("sender_prefix", sender_prefix)
    if when.utcoffset() is None:
        raise ValueError(f"make_identifier needs an aware datetime, got {when!r}")
    if serial < 0:
        raise ValueError(f"serial must be >= 0, got {serial}")
    return f"SL-{sender_prefix}-{when.astimezone(UTC):%Y%m%dT%H%M%S}-{serial:06d}"


def _require_cap_id(what: str, value: str) -> None:
    if not value or _ILLEGAL_ID.search(value):
        raise ValueError(f"{what} {value!r} must be non-empty without spaces, ',', '<' or '&'")


def _clean(text: str) -> str:
    # Free text comes from sensors and operators; a stray control character must not make the
    # warning unsendable, so it becomes U+FFFD instead of producing malformed XML.
    return _NON_XML.sub("\ufffd", text)


def _slug(event: str) -> str:
    slug = re.sub(r"[\W_]+", "-", event.casefold()).strip("-")
    return _clean(slug) or "unspecified"


def _decimal(x: float) -> str:
    if not math.isfinite(x):
        raise ValueError(f"coordinate {x!r} is not finite")
    text = f"{x:.6f}".rstrip("0").rstrip(".")
    return "0" if text == "-0" else text


def _point(lat: float, lon: float) -> str:
    if not (-90 <= lat <= 90 and -180 <= lon <= 180):
        raise ValueError(f"({lat}, {lon}) is not a WGS84 lat/lon")
    return f"{_decimal(lat)},{_decimal(lon)}"


def _polygon_text(points: tuple[tuple[float, float], ...]) -> str:
    ring = [_point(lat, lon) for lat, lon in points]
    if ring and ring[0] != ring[-1]:
        ring.append(ring[0])
    if len(ring) < 4:
        raise ValueError(f"a CAP polygon needs >= 3 distinct points, got {points!r}")
    return " ".join(ring)


def _circle_text(area: CapArea) -> str | None:
    if area.lat is None and area.lon is None:
        return None
    if area.lat is None or area.lon is None:
        raise ValueError(f"area {area.description!r} has only one of lat/lon")
    if not area.radius_km >= 0:
        raise ValueError(f"radius_km must be >= 0, got {area.radius_km!r}")
    return f"{_point(area.lat, area.lon)} {_decimal(area.radius_km)}"


# --------------------------------------------------------------------------- rendering


def _check_message(msg: CapMessage) -> None:
    _require_cap_id("identifier", msg.identifier)
    _require_cap_id("sender", msg.sender)
    checks = (
        ("msg_type", msg.msg_type, _MSG_TYPES),
        ("level", msg.level, LEVEL_PROFILE),
        ("status", msg.status, _STATUSES),
        ("category", msg.category, _CATEGORIES),
        ("certainty", msg.certainty or "Unknown", _CERTAINTIES),
        ("severity", msg.severity or "Unknown", _SEVERITIES),
        ("urgency", msg.urgency or "Unknown", _URGENCIES),
        ("response_type", msg.response_type or "None", _RESPONSE_TYPES),
    )
    for name, value, allowed in checks:
        if value not in allowed:
            raise ValueError(f"{name} {value!r} is not one of {sorted(allowed)}")
    if not msg.restriction.strip():
        raise ValueError("scope Restricted needs a non-empty restriction")
    if not _LANGUAGE.fullmatch(msg.language):
        raise ValueError(f"language {msg.language!r} is not an RFC 3066 tag")
    if msg.msg_type != "Alert" and not msg.references:
        raise ValueError(f"a CAP {msg.msg_type} must reference the message(s) it replaces")
    if any(name == LEVEL_PARAM for name, _ in msg.parameters):
        raise ValueError(f"{LEVEL_PARAM} is set from msg.level; do not pass it as a parameter")


def _sub(parent: ET.Element, tag: str, text: str | None = None) -> ET.Element:
    elem = ET.SubElement(parent, f"{{{CAP_NS}}}{tag}")
    if text is not None:
        elem.text = _clean(text)
    return elem


def _pair(parent: ET.Element, tag: str, name: str, value: str) -> None:
    elem = _sub(parent, tag)
    _sub(elem, "valueName", str(name))
    _sub(elem, "value", str(value))  # tolerate numeric readings passed as values


def render_cap(msg: CapMessage) -> bytes:
    """Serialise one Sentryline warning as CAP 1.2 XML (UTF-8, declaration, XSD element order)."""
    _check_message(msg)
    severity, urgency, certainty, response_type = LEVEL_PROFILE[msg.level]
    polygon = _polygon_text(msg.area.polygon) if msg.area.polygon is not None else None
    circle = None if polygon is not None else _circle_text(msg.area)

    alert = ET.Element(f"{{{CAP_NS}}}alert")
    _sub(alert, "identifier", msg.identifier)
    _sub(alert, "sender", msg.sender)
    _sub(alert, "sent", format_cap_time(msg.sent))
    _sub(alert, "status", msg.status)
    _sub(alert, "msgType", msg.msg_type)
    _sub(alert, "scope", "Restricted")
    _sub(alert, "restriction", msg.restriction)
    _sub(alert, "code", CAP_CODE)
    if msg.note:
        _sub(alert, "note", msg.note)
    if msg.references:
        _sub(alert, "references", format_references(msg.references))
    if msg.incidents:
        _sub(alert, "incidents", msg.incidents)

    info = _sub(alert, "info")
    _sub(info, "language", msg.language)
    _sub(info, "category", msg.category)
    _sub(info, "event", msg.event)
    _sub(info, "responseType", msg.response_type or response_type)
    _sub(info, "urgency", msg.urgency or urgency)
    _sub(info, "severity", msg.severity or severity)
    _sub(info, "certainty", msg.certainty or certainty)
    _pair(info, "eventCode", EVENT_CODE_NAME, _slug(msg.event))
    _sub(info, "effective", format_cap_time(msg.effective))
    if msg.onset is not None:
        _sub(info, "onset", format_cap_time(msg.onset))
    if msg.expires is not None:
        _sub(info, "expires", format_cap_time(msg.expires))
    _sub(info, "senderName", msg.sender_name)
    _sub(info, "headline", msg.headline)
    _sub(info, "description", msg.description)
    if msg.instruction:
        _sub(info, "instruction", msg.instruction)
    _pair(info, "parameter", LEVEL_PARAM, msg.level.upper())
    for name, value in msg.parameters:
        _pair(info, "parameter", name, value)

    area = _sub(info, "area")
    _sub(area, "areaDesc", msg.area.description)
    if polygon is not None:
        _sub(area, "polygon", polygon)
    if circle is not None:
        _sub(area, "circle", circle)

    ET.indent(alert)
    body = ET.tostring(alert, encoding="unicode", default_namespace=CAP_NS)
    return ('<?xml version="1.0" encoding="UTF-8"?>\n' + body + "\n").encode("utf-8")


# --------------------------------------------------------------------------- reading


class _NoDoctype(ET.TreeBuilder):
    # CAP never uses a DTD; refusing one shuts out entity-expansion tricks in received XML.
    def doctype(self, name: str, pubid: str | None, system: str | None) -> None:
        raise ValueError("DOCTYPE is not allowed in CAP messages")


def _parse_alert(xml: bytes) -> ET.Element:
    parser = ET.XMLParser(target=_NoDoctype())
    try:
        parser.feed(xml)
        root = parser.close()
    except ET.ParseError as exc:
        raise ValueError(f"not well-formed XML: {exc}") from exc
    if root.tag != f"{{{CAP_NS}}}alert":
        raise ValueError(f"root element is {root.tag!r}, not a CAP 1.2 alert")
    return root


def _q(tag: str) -> str:
    return f"{{{CAP_NS}}}{tag}"


def _text(parent: ET.Element, tag: str) -> str | None:
    # Raw text: xs:string keeps whitespace, so a padded identifier really contains a space.
    elem = parent.find(_q(tag))
    return None if elem is None else elem.text or ""


def _token(parent: ET.Element, tag: str) -> str | None:
    # Times are xs:dateTime (whitespace collapsed by the XSD), so surrounding space is harmless.
    text = _text(parent, tag)
    return None if text is None else text.strip()


def _pairs(parent: ET.Element, tag: str) -> list[tuple[str, str]]:
    return [
        ((_text(el, "valueName") or ""), (_text(el, "value") or ""))
        for el in parent.findall(_q(tag))
    ]


def _split_references(text: str) -> tuple[list[tuple[str, str, str]], list[str]]:
    refs, problems = [], []
    for triple in text.split():
        parts = triple.split(",")
        if len(parts) != 3 or not all(parts):
            problems.append(f"reference {triple!r} is not a 'sender,identifier,sent' triple")
            continue
        if problem := _time_problem("reference sent", parts[2]):
            problems.append(problem)
        refs.append((parts[0], parts[1], parts[2]))
    return refs, problems


def parse_cap(xml: bytes) -> dict:
    """Read the fields Sentryline needs back from a CAP 1.2 message (first <info> only).

    'level' is None when the message carries no CN_WARNING_LEVEL; ValueError on non-CAP input.
    """
    root = _parse_alert(xml)
    head = {
        "identifier": _text(root, "identifier"),
        "sender": _text(root, "sender"),
        "sent": _token(root, "sent"),
        "msgType": _text(root, "msgType"),
    }
    if missing := [tag for tag, value in head.items() if not value]:
        raise ValueError(f"CAP alert lacks required {missing}")
    refs, problems = _split_references(_text(root, "references") or "")
    if problems:
        raise ValueError("; ".join(problems))

    info = root.find(_q("info"))
    params = dict(_pairs(info, "parameter")) if info is not None else {}
    level = params.get(LEVEL_PARAM)
    if level is not None and level.lower() not in LEVEL_PROFILE:
        raise ValueError(f"{LEVEL_PARAM} {level!r} is not a warning level")
    return {
        **head,
        "status": _text(root, "status"),
        "incidents": _text(root, "incidents"),
        "references": refs,
        "level": level.lower() if level is not None else None,
        "event": _text(info, "event") if info is not None else None,
        "effective": _token(info, "effective") if info is not None else None,
        "onset": _token(info, "onset") if info is not None else None,
        **{
            tag: _text(info, tag) if info is not None else None
            for tag in ("severity", "urgency", "certainty", "responseType")
        },
        "headline": _text(info, "headline") if info is not None else None,
        "parameters": params,
    }


# --------------------------------------------------------------------------- spec rules


def _time_problem(field: str, value: str) -> str | None:
    if not _CAP_TIME.fullmatch(value):
        return f"{field} {value!r} is not YYYY-MM-DDThh:mm:ss±hh:mm ('Z' is not allowed)"
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return f"{field} {value!r} is not a real date and time"
    offset = parsed.utcoffset()
    if offset is None or abs(offset) > _MAX_OFFSET or int(value[-2:]) >= 60:
        return f"{field} {value!r} has an impossible UTC offset"
    return None


def _id_problem(field: str, value: str | None) -> str | None:
    if not value:
        return f"{field} is missing or empty"
    if _ILLEGAL_ID.search(value):
        return f"{field} {value!r} contains a space, ',', '<' or '&'"
    return None


def _latlon_problem(where: str, lat: str, lon: str) -> str | None:
    if not (-90 <= float(lat) <= 90 and -180 <= float(lon) <= 180):
        return f"{where}: {lat},{lon} is outside lat [-90, 90] / lon [-180, 180]"
    return None


def _circle_problems(text: str) -> list[str]:
    match = _CIRCLE.fullmatch(text.strip())
    if not match:
        return [f"circle {text!r} is not 'lat,lon radius'"]
    lat, lon, radius = match.groups()
    problems = [p for p in [_latlon_problem("circle", lat, lon)] if p]
    if float(radius) < 0:
        problems.append(f"circle radius {radius} is negative")
    return problems


def _polygon_problems(text: str) -> list[str]:
    points = []
    for pair in text.split():
        match = _POINT.fullmatch(pair)
        if not match:
            return [f"polygon point {pair!r} is not 'lat,lon'"]
        if problem := _latlon_problem("polygon", *match.groups()):
            return [problem]
        points.append((float(match[1]), float(match[2])))
    if len(points) < 4:
        return [f"polygon has {len(points)} points; a closed ring needs >= 4"]
    if points[0] != points[-1]:
        return ["polygon is not closed (first point != last point)"]
    return []


def _info_problems(index: int, info: ET.Element) -> list[str]:
    where = f"info[{index}]"
    problems = [
        p
        for tag in ("effective", "onset", "expires")
        if (value := _token(info, tag)) is not None
        if (p := _time_problem(f"{where}/{tag}", value))
    ]
    levels = [value for name, value in _pairs(info, "parameter") if name == LEVEL_PARAM]
    if len(levels) != 1:
        problems.append(f"{where} has {len(levels)} {LEVEL_PARAM} parameters; exactly 1 needed")
    elif levels[0] not in {level.upper() for level in LEVEL_PROFILE}:
        problems.append(f"{where} {LEVEL_PARAM} {levels[0]!r} is not BLUE/YELLOW/ORANGE/RED")
    for area in info.findall(_q("area")):
        for circle in area.findall(_q("circle")):
            problems += _circle_problems(circle.text or "")
        for polygon in area.findall(_q("polygon")):
            problems += _polygon_problems(polygon.text or "")
    return problems


def check_cap_rules(xml: bytes) -> list[str]:
    """CAP 1.2 rules the XSD cannot express, plus the Sentryline level rule; [] when fine."""
    try:
        root = _parse_alert(xml)
    except ValueError as exc:
        return [str(exc)]
    problems = [p for tag in ("identifier", "sender") if (p := _id_problem(tag, _text(root, tag)))]
    sent = _token(root, "sent")
    if problem := ("sent is missing" if sent is None else _time_problem("sent", sent)):
        problems.append(problem)

    scope = _text(root, "scope")
    if scope == "Restricted" and not (_text(root, "restriction") or "").strip():
        problems.append("scope Restricted needs a non-empty <restriction>")
    if scope == "Private" and not (_text(root, "addresses") or "").strip():
        problems.append("scope Private needs a non-empty <addresses>")

    refs, ref_problems = _split_references(_text(root, "references") or "")
    problems += ref_problems
    for sender, identifier, _ in refs:
        problems += [
            p
            for field, value in (("reference sender", sender), ("reference id", identifier))
            if (p := _id_problem(field, value))
        ]
    msg_type = _text(root, "msgType")
    if msg_type in {"Update", "Cancel", "Ack", "Error"} and not refs:
        problems.append(f"msgType {msg_type} needs <references> to the earlier message(s)")

    infos = root.findall(_q("info"))
    if msg_type in _MSG_TYPES and not infos:
        problems.append(f"a Sentryline {msg_type} needs an <info> carrying {LEVEL_PARAM}")
    for index, info in enumerate(infos):
        problems += _info_problems(index, info)
    return problems
