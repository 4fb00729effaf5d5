"""CAP 1.2 builder: XSD validity, the spec rules the XSD cannot check, and round-trips."""

from __future__ import annotations

import dataclasses
import string
import xml.etree.ElementTree as ET
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from central.cap import (
    CAP_NS,
    LEVEL_PROFILE,
    CapArea,
    CapMessage,
    CapReference,
    check_cap_rules,
    format_cap_time,
    format_references,
    make_identifier,
    parse_cap,
    render_cap,
)

CST = timezone(timedelta(hours=8))
T0 = datetime(2026, 11, 21, 18, 44, 26, tzinfo=CST)
NS = {"cap": CAP_NS}
PREVIOUS = CapReference(
    "sentryline.example.org", "SL-gw1-20261121T104000-000041", T0 - timedelta(minutes=4)
)


def make_msg(**changes) -> CapMessage:
    base = CapMessage(
        identifier="SL-gw1-20261121T104426-000042",
        sender="sentryline.example.org",
        sent=T0 + timedelta(seconds=3),
        msg_type="Alert",
        level="orange",
        event="Combustible gas leak",
        headline="Methane at 52 %LEL in well W-7",
        description="ch4_lel 0.52 for 2 samples, confirmed by W-8.",
        effective=T0,
        area=CapArea("Well W-7, Huaihe Rd", lat=31.820591, lon=117.227239, radius_km=0.1),
        parameters=(("ch4_lel", "0.52"), ("asset", "W-7")),
    )
    return dataclasses.replace(base, **changes)


def tree(xml: bytes) -> ET.Element:
    return ET.fromstring(xml)


def text_of(xml: bytes, path: str) -> str | None:
    elem = tree(xml).find(path, NS)
    return None if elem is None else elem.text


# --------------------------------------------------------------------------- valid messages


def test_alert_is_valid_and_follows_the_profile(assert_valid_cap) -> None:
    xml = render_cap(make_msg(note="drill-free", incidents="INC-7", instruction="Keep clear."))
    assert_valid_cap(xml)
    assert xml.startswith(b'<?xml version="1.0" encoding="UTF-8"?>')
    assert b"ns0:" not in xml  # CAP namespace is the default namespace
    root = tree(xml)
    assert root.tag == f"{{{CAP_NS}}}alert"
    assert text_of(xml, "cap:scope") == "Restricted"
    assert text_of(xml, "cap:restriction") == "Sentryline operators and emergency services"
    assert text_of(xml, "cap:code") == "SENTRYLINE-1.0"
    assert text_of(xml, "cap:note") == "drill-free"
    assert text_of(xml, "cap:incidents") == "INC-7"
    assert root.find("cap:references", NS) is None
    assert text_of(xml, "cap:info/cap:eventCode/cap:value") == "combustible-gas-leak"
    params = [
        (p.findtext("cap:valueName", namespaces=NS), p.findtext("cap:value", namespaces=NS))
        for p in root.findall("cap:info/cap:parameter", NS)
    ]
    assert params == [("CN_WARNING_LEVEL", "ORANGE"), ("ch4_lel", "0.52"), ("asset", "W-7")]


def test_optional_elements_are_left_out(assert_valid_cap) -> None:
    xml = render_cap(make_msg())
    assert_valid_cap(xml)
    root = tree(xml)
    for path in ("cap:note", "cap:incidents", "cap:references"):
        assert root.find(path, NS) is None, path
    for path in ("cap:instruction", "cap:onset", "cap:expires"):
        assert root.find(f"cap:info/{path}", NS) is None, path


def test_update_carries_references(assert_valid_cap) -> None:
    xml = render_cap(make_msg(msg_type="Update", level="red", references=(PREVIOUS,)))
    assert_valid_cap(xml)
    assert text_of(xml, "cap:references") == (
        "sentryline.example.org,SL-gw1-20261121T104000-000041,2026-11-21T18:40:26+08:00"
    )
    parsed = parse_cap(xml)
    assert parsed["msgType"] == "Update"
    assert parsed["level"] == "red"
    assert parsed["references"] == [
        (PREVIOUS.sender, PREVIOUS.identifier, "2026-11-21T18:40:26+08:00")
    ]


def test_cancel_keeps_info_with_the_cancelled_level(assert_valid_cap) -> None:
    xml = render_cap(make_msg(msg_type="Cancel", level="yellow", references=(PREVIOUS,)))
    assert_valid_cap(xml)
    parsed = parse_cap(xml)
    assert (parsed["msgType"], parsed["level"]) == ("Cancel", "yellow")
    assert text_of(xml, "cap:info/cap:severity") == "Moderate"


@pytest.mark.parametrize("level", sorted(LEVEL_PROFILE))
def test_level_table_drives_severity_urgency_certainty_response(assert_valid_cap, level) -> None:
    xml = render_cap(make_msg(level=level))
    assert_valid_cap(xml)
    info = tree(xml).find("cap:info", NS)
    got = tuple(
        info.findtext(f"cap:{tag}", namespaces=NS)
        for tag in ("severity", "urgency", "certainty", "responseType")
    )
    assert got == LEVEL_PROFILE[level]


def test_level_profile_values() -> None:
    assert LEVEL_PROFILE["red"] == ("Extreme", "Immediate", "Observed", "Execute")
    assert LEVEL_PROFILE["blue"] == ("Minor", "Expected", "Possible", "Monitor")


def test_certainty_and_response_type_overrides(assert_valid_cap) -> None:
    xml = render_cap(make_msg(level="red", certainty="Likely", response_type="Evacuate"))
    assert_valid_cap(xml)
    assert text_of(xml, "cap:info/cap:certainty") == "Likely"
    assert text_of(xml, "cap:info/cap:responseType") == "Evacuate"


def test_open_polygon_is_closed(assert_valid_cap) -> None:
    ring = ((31.82, 117.22), (31.83, 117.22), (31.83, 117.23))
    xml = render_cap(make_msg(area=CapArea("Block 3", polygon=ring)))
    assert_valid_cap(xml)
    assert text_of(xml, "cap:info/cap:area/cap:polygon") == (
        "31.82,117.22 31.83,117.22 31.83,117.23 31.82,117.22"
    )
    assert tree(xml).find("cap:info/cap:area/cap:circle", NS) is None


def test_closed_polygon_is_not_closed_twice(assert_valid_cap) -> None:
    ring = ((31.82, 117.22), (31.83, 117.22), (31.83, 117.23), (31.82, 117.22))
    xml = render_cap(make_msg(area=CapArea("Block 3", polygon=ring)))
    assert_valid_cap(xml)
    assert len(text_of(xml, "cap:info/cap:area/cap:polygon").split()) == 4


def test_circle_area(assert_valid_cap) -> None:
    xml = render_cap(make_msg(area=CapArea("Lift 2", lat=-33.5, lon=-70.25, radius_km=0.05)))
    assert_valid_cap(xml)
    assert text_of(xml, "cap:info/cap:area/cap:circle") == "-33.5,-70.25 0.05"


def test_tiny_coordinates_have_no_exponent(assert_valid_cap) -> None:
    xml = render_cap(make_msg(area=CapArea("Null Island", lat=1e-9, lon=-1e-9, radius_km=1e-7)))
    assert_valid_cap(xml)
    assert text_of(xml, "cap:info/cap:area/cap:circle") == "0,0 0"


def test_area_without_coordinates(assert_valid_cap) -> None:
    xml = render_cap(make_msg(area=CapArea("Whole district")))
    assert_valid_cap(xml)
    area = tree(xml).find("cap:info/cap:area", NS)
    assert [child.tag.split("}")[1] for child in area] == ["areaDesc"]


def test_utc_times_are_written_minus_zero(assert_valid_cap) -> None:
    t = datetime(2026, 1, 2, 3, 4, 5, 999_999, tzinfo=UTC)
    msg = make_msg(sent=t, effective=t, onset=t, expires=t + timedelta(hours=1))
    xml = render_cap(msg)
    assert_valid_cap(xml)
    assert text_of(xml, "cap:sent") == "2026-01-02T03:04:05-00:00"
    assert text_of(xml, "cap:info/cap:expires") == "2026-01-02T04:04:05-00:00"
    assert b"Z<" not in xml


def test_beijing_times(assert_valid_cap) -> None:
    xml = render_cap(make_msg(onset=T0 + timedelta(hours=20)))
    assert_valid_cap(xml)
    assert text_of(xml, "cap:info/cap:effective") == "2026-11-21T18:44:26+08:00"
    assert text_of(xml, "cap:info/cap:onset") == "2026-11-22T14:44:26+08:00"


@pytest.mark.parametrize(
    ("dt", "expected"),
    [
        (datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC), "2026-01-02T03:04:05-00:00"),
        (datetime(2026, 1, 2, 3, 4, 5, 700_000, tzinfo=CST), "2026-01-02T03:04:05+08:00"),
        (
            datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone(-timedelta(hours=5, minutes=30))),
            "2026-01-02T03:04:05-05:30",
        ),
        # Sub-minute offsets cannot be written in CAP: same instant, in UTC.
        (
            datetime(2026, 1, 2, 8, 0, 0, tzinfo=timezone(timedelta(hours=8, seconds=30))),
            "2026-01-01T23:59:30-00:00",
        ),
    ],
)
def test_format_cap_time(dt, expected) -> None:
    assert format_cap_time(dt) == expected


def test_format_references_joins_triples() -> None:
    other = CapReference("b", "id-2", datetime(2026, 1, 1, tzinfo=UTC))
    assert format_references([PREVIOUS, other]) == (
        f"{PREVIOUS.sender},{PREVIOUS.identifier},2026-11-21T18:40:26+08:00"
        " b,id-2,2026-01-01T00:00:00-00:00"
    )
    assert format_references([]) == ""


def test_control_characters_are_replaced_not_fatal(assert_valid_cap) -> None:
    msg = make_msg(headline="a\x00b\x1bc\ufffe", description="line1\nline2\ttab")
    xml = render_cap(msg)
    assert_valid_cap(xml)
    assert text_of(xml, "cap:info/cap:headline") == "a\ufffdb\ufffdc\ufffd"
    assert text_of(xml, "cap:info/cap:description") == "line1\nline2\ttab"


def test_numeric_parameter_values_are_written_as_text(assert_valid_cap) -> None:
    xml = render_cap(make_msg(parameters=(("ch4_lel", 0.52), ("samples", 2))))  # type: ignore[arg-type]
    assert_valid_cap(xml)
    assert parse_cap(xml)["parameters"] == {
        "CN_WARNING_LEVEL": "ORANGE",
        "ch4_lel": "0.52",
        "samples": "2",
    }


# --------------------------------------------------------------------------- render rejects


NAIVE = datetime(2026, 11, 21, 18, 44, 26)


@pytest.mark.parametrize(
    "changes",
    [
        {"sent": NAIVE},
        {"effective": NAIVE},
        {"onset": NAIVE},
        {"expires": NAIVE},
        {"msg_type": "Update", "references": (CapReference("s", "i", NAIVE),)},
    ],
    ids=["sent", "effective", "onset", "expires", "reference"],
)
def test_render_rejects_naive_datetimes(changes) -> None:
    with pytest.raises(ValueError, match="aware"):
        render_cap(make_msg(**changes))


def test_format_cap_time_rejects_naive() -> None:
    with pytest.raises(ValueError):
        format_cap_time(NAIVE)


@pytest.mark.parametrize(
    "changes",
    [
        {"identifier": "has space"},
        {"identifier": "a,b"},
        {"identifier": "a<b"},
        {"identifier": "a&b"},
        {"identifier": ""},
        {"sender": "x y"},
        {"level": "purple"},
        {"msg_type": "Ack"},
        {"status": "Real"},
        {"category": "Gas"},
        {"certainty": "Sure"},
        {"response_type": "Run"},
        {"restriction": "  "},
        {"language": "en US"},
        {"msg_type": "Update"},  # no references
        {"msg_type": "Cancel"},
        {"parameters": (("CN_WARNING_LEVEL", "RED"),)},
        {"area": CapArea("x", polygon=((1.0, 2.0), (3.0, 4.0)))},
        {"area": CapArea("x", polygon=((1.0, 2.0), (3.0, 4.0), (1.0, 2.0)))},
        {"area": CapArea("x", lat=91.0, lon=0.0)},
        {"area": CapArea("x", lat=0.0, lon=-180.5)},
        {"area": CapArea("x", lat=float("nan"), lon=0.0)},
        {"area": CapArea("x", lat=1.0)},
        {"area": CapArea("x", lat=1.0, lon=2.0, radius_km=-1.0)},
    ],
)
def test_render_rejects_illegal_messages(changes) -> None:
    with pytest.raises(ValueError):
        render_cap(make_msg(**changes))


# --------------------------------------------------------------------------- rule checker


@pytest.fixture(scope="module")
def update_xml() -> str:
    msg = make_msg(msg_type="Update", references=(PREVIOUS,), onset=T0, expires=T0)
    xml = render_cap(msg).decode()
    assert check_cap_rules(xml.encode()) == []
    return xml


@pytest.fixture(scope="module")
def polygon_xml() -> str:
    ring = ((31.82, 117.22), (31.83, 117.22), (31.83, 117.23))
    xml = render_cap(make_msg(area=CapArea("Block 3", polygon=ring))).decode()
    assert check_cap_rules(xml.encode()) == []
    return xml


def broken(xml: str, old: str, new: str) -> bytes:
    assert old in xml, f"test setup: {old!r} not in rendered XML"
    return xml.replace(old, new, 1).encode()


SENT = "<sent>2026-11-21T18:44:29+08:00</sent>"
REFS_OPEN = "<references>"
LEVEL = "<value>ORANGE<"
CIRCLE = "<circle>31.820591,117.227239 0.1</circle>"
RESTRICTION = "<restriction>Sentryline operators and emergency services</restriction>"


@pytest.mark.parametrize(
    ("old", "new", "problem"),
    [
        (RESTRICTION, "<restriction> </restriction>", "restriction"),
        (RESTRICTION, "", "restriction"),
        ("<scope>Restricted</scope>", "<scope>Private</scope>", "addresses"),
        ("<identifier>SL-gw1", "<identifier>SL gw1", "identifier"),
        ("<identifier>SL-gw1", "<identifier>SL,gw1", "identifier"),
        ("<identifier>SL-gw1", "<identifier>SL&lt;gw1", "identifier"),
        ("<identifier>SL-gw1", "<identifier>SL&amp;gw1", "identifier"),
        ("<sender>sentryline.example.org", "<sender>sentryline example.org", "sender"),
        (SENT, "<sent>2026-11-21T10:44:29Z</sent>", "sent"),
        (SENT, "<sent>2026-11-21T18:44:29</sent>", "sent"),
        (SENT, "<sent>2026-13-21T18:44:29+08:00</sent>", "sent"),
        (SENT, "<sent>2026-11-21T18:44:29+15:00</sent>", "sent"),
        ("<effective>2026-11-21T18:44:26+08:00", "<effective>2026-11-21T10:44:26Z", "effective"),
        ("<onset>2026-11-21T18:44:26+08:00", "<onset>2026-11-21T18:44+08:00", "onset"),
        ("<expires>2026-11-21T18:44:26+08:00", "<expires>2026-11-21 18:44:26+08:00", "expires"),
        (",2026-11-21T18:40:26+08:00</references>", "</references>", "triple"),
        (",2026-11-21T18:40:26+08:00</references>", ",yesterday</references>", "reference"),
        (REFS_OPEN, "<references>a,b,2026-11-21T18:40:26+08:00 ", ""),  # 2 refs: fine
        (REFS_OPEN, "<references>a b,c,2026-11-21T18:40:26+08:00 ", "triple"),
        ("<references>sentryline.example.org", "<references>", "triple"),
        (CIRCLE, "<circle>31.820591,117.227239</circle>", "circle"),
        (CIRCLE, "<circle>31.820591 117.227239 0.1</circle>", "circle"),
        (CIRCLE, "<circle>91,117.227239 0.1</circle>", "outside"),
        (CIRCLE, "<circle>31.8,-180.01 0.1</circle>", "outside"),
        (CIRCLE, "<circle>31.8,117.2 -0.1</circle>", "negative"),
        (CIRCLE, "<circle>nan,117.2 0.1</circle>", "circle"),
        (CIRCLE, "<circle>3e1,117.2 0.1</circle>", "circle"),
        (CIRCLE, "<polygon>1,2 3,4 1,2</polygon>", "polygon"),
        ("<valueName>CN_WARNING_LEVEL<", "<valueName>CN_LEVEL<", "CN_WARNING_LEVEL"),
        (LEVEL, "<value>PURPLE<", "PURPLE"),
        (LEVEL, "<value>orange<", "orange"),
        (LEVEL, "<value> ORANGE<", "ORANGE"),
        (
            "<parameter>",
            "<parameter><valueName>CN_WARNING_LEVEL</valueName><value>RED</value></parameter>"
            "<parameter>",
            "exactly 1",
        ),
    ],
)
def test_rules_catch_each_broken_rule(update_xml, old, new, problem) -> None:
    problems = check_cap_rules(broken(update_xml, old, new))
    if not problem:
        assert problems == []
    else:
        assert problems, "rule violation went unnoticed"
        assert any(problem in p for p in problems), problems


@pytest.mark.parametrize("msg_type", ["Update", "Cancel", "Ack", "Error"])
def test_rules_require_references_for_follow_ups(update_xml, msg_type) -> None:
    start, end = update_xml.index("  <references>"), update_xml.index("</references>\n") + 14
    xml = update_xml[:start] + update_xml[end:]
    xml = xml.replace("<msgType>Update<", f"<msgType>{msg_type}<")
    assert any("references" in p for p in check_cap_rules(xml.encode()))


def test_rules_require_info_with_level(update_xml) -> None:
    start, end = update_xml.index("<info>"), update_xml.index("</info>") + 7
    problems = check_cap_rules((update_xml[:start] + update_xml[end:]).encode())
    assert any("<info>" in p for p in problems), problems


@pytest.mark.parametrize(
    ("old", "new", "problem"),
    [
        ("117.23 31.82,117.22<", "117.23<", "needs >= 4"),
        ("117.23 31.82,117.22<", "117.23 31.82,117.23<", "not closed"),
        ("117.23 31.82,117.22<", "117.23 31.82;117.22<", "not 'lat,lon'"),
        ("<polygon>31.82,", "<polygon>-90.5,", "outside"),
    ],
)
def test_rules_catch_broken_polygons(polygon_xml, old, new, problem) -> None:
    problems = check_cap_rules(broken(polygon_xml, old, new))
    assert any(problem in p for p in problems), problems


def test_polygon_closure_compares_numbers_not_text(polygon_xml) -> None:
    xml = broken(polygon_xml, "117.23 31.82,117.22<", "117.23 31.820,117.2200<")
    assert check_cap_rules(xml) == []


@pytest.mark.parametrize(
    "xml",
    [
        b"<alert><identifier>x</identifier></alert>",  # no namespace
        b'<feed xmlns="http://www.w3.org/2005/Atom"/>',
        b"<alert",
        b"",
        b'<!DOCTYPE alert [<!ENTITY e "x">]><alert xmlns="urn:oasis:names:tc:emergency:cap:1.2"/>',
    ],
)
def test_non_cap_input(xml) -> None:
    assert check_cap_rules(xml)
    with pytest.raises(ValueError):
        parse_cap(xml)


def test_parse_cap_rejects_missing_identifier(update_xml) -> None:
    xml = broken(update_xml, "<identifier>SL-gw1-20261121T104426-000042</identifier>", "")
    with pytest.raises(ValueError, match="identifier"):
        parse_cap(xml)


def test_parse_cap_reads_back_fields() -> None:
    parsed = parse_cap(render_cap(make_msg(level="blue")))
    assert parsed["identifier"] == "SL-gw1-20261121T104426-000042"
    assert parsed["sender"] == "sentryline.example.org"
    assert parsed["sent"] == "2026-11-21T18:44:29+08:00"
    assert parsed["msgType"] == "Alert"
    assert parsed["level"] == "blue"
    assert parsed["references"] == []
    assert parsed["event"] == "Combustible gas leak"
    assert parsed["effective"] == "2026-11-21T18:44:26+08:00"
    assert parsed["parameters"] == {"CN_WARNING_LEVEL": "BLUE", "ch4_lel": "0.52", "asset": "W-7"}


# --------------------------------------------------------------------------- identifiers


def test_make_identifier_is_legal_and_in_utc() -> None:
    ident = make_identifier("gw1", T0, 42)
    assert ident == "SL-gw1-20261121T104426-000042"
    assert make_identifier("gw1", T0.astimezone(UTC), 42) == ident
    assert make_identifier("gw1", T0, 43) != ident
    assert not set(ident) & set(" ,<&")


@pytest.mark.parametrize(
    ("prefix", "when", "serial"),
    [("g w", T0, 1), ("g,w", T0, 1), ("", T0, 1), ("gw", NAIVE, 1), ("gw", T0, -1)],
)
def test_make_identifier_rejects(prefix, when, serial) -> None:
    with pytest.raises(ValueError):
        make_identifier(prefix, when, serial)


# --------------------------------------------------------------------------- property


free_text = st.text(st.characters(exclude_categories=("Cs", "Cc", "Cn")), max_size=30) | (
    st.sampled_from(["<b>&amp;</b> \"x\" 'y'", "]]>", "燃气泄漏 <警告> & “引号”", "&#0;"])
)
cap_id = st.text(string.ascii_letters + string.digits + "-_.:@/", min_size=1, max_size=20)
aware = st.datetimes(
    min_value=datetime(2000, 1, 1),
    max_value=datetime(2099, 12, 31),
    timezones=st.integers(-14 * 60, 14 * 60).map(lambda m: timezone(timedelta(minutes=m))),
)
references = st.lists(st.builds(CapReference, cap_id, cap_id, aware), max_size=3)


@settings(max_examples=60, deadline=None)
@given(
    headline=free_text,
    description=free_text,
    event=free_text,
    parameters=st.lists(
        st.tuples(free_text.filter(lambda s: s != "CN_WARNING_LEVEL"), free_text), max_size=4
    ),
    prefix=cap_id,
    serial=st.integers(0, 10**9),
    sent=aware,
    level=st.sampled_from(sorted(LEVEL_PROFILE)),
    msg_type=st.sampled_from(["Alert", "Update", "Cancel"]),
    refs=references,
)
def test_arbitrary_text_stays_valid_and_round_trips(
    assert_valid_cap,
    headline,
    description,
    event,
    parameters,
    prefix,
    serial,
    sent,
    level,
    msg_type,
    refs,
) -> None:
    if msg_type != "Alert" and not refs:
        refs = [CapReference("sentryline", "SL-x-1", sent)]
    msg = make_msg(
        identifier=make_identifier(prefix, sent, serial),
        sent=sent,
        effective=sent,
        msg_type=msg_type,
        level=level,
        event=event,
        headline=headline,
        description=description,
        parameters=tuple(parameters),
        references=tuple(refs),
    )
    xml = render_cap(msg)
    assert_valid_cap(xml)
    parsed = parse_cap(xml)
    assert parsed["identifier"] == msg.identifier
    assert parsed["sent"] == format_cap_time(sent)
    assert parsed["msgType"] == msg_type
    assert parsed["level"] == level
    assert parsed["references"] == [(r.sender, r.identifier, format_cap_time(r.sent)) for r in refs]
    assert parsed["event"] == event
    assert parsed["headline"] == headline
    assert parsed["parameters"] == {"CN_WARNING_LEVEL": level.upper(), **dict(parameters)}
