"""MQTT connection settings shared by the gateway uplink and central, and topic names."""

from __future__ import annotations

import contextlib
import socket
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

import aiomqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from pydantic import BaseModel, ConfigDict, Field, field_validator

TOPIC_ROOT = "sentryline/v1"
ALERTS_TOPIC = f"{TOPIC_ROOT}/alerts"
TELEMETRY_FILTER = f"{TOPIC_ROOT}/+/+/telemetry"
STATE_FILTER = f"{TOPIC_ROOT}/+/+/state"


def telemetry_topic(site: str, gateway: str) -> str:
    return f"{TOPIC_ROOT}/{site}/{gateway}/telemetry"


def state_topic(site: str, gateway: str) -> str:
    return f"{TOPIC_ROOT}/{site}/{gateway}/state"


def ack_topic(site: str, gateway: str) -> str:
    """Central confirms stored packs here: {"ep": epoch, "sq": [[first, last], ...]}."""
    return f"{TOPIC_ROOT}/{site}/{gateway}/ack"


def seq_ranges(seqs: list[int]) -> list[list[int]]:
    """[3, 4, 5, 9] -> [[3, 5], [9, 9]]: compact confirmations."""
    ranges: list[list[int]] = []
    for seq in sorted(set(seqs)):
        if ranges and seq == ranges[-1][1] + 1:
            ranges[-1][1] = seq
        else:
            ranges.append([seq, seq])
    return ranges


def parse_topic(topic: str) -> tuple[str, str, str] | None:
    """(site, gateway, kind) for a gateway topic, else None."""
    parts = topic.split("/")
    if len(parts) == 5 and f"{parts[0]}/{parts[1]}" == TOPIC_ROOT:
        return parts[2], parts[3], parts[4]
    return None


class TlsSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    insecure: bool = Field(False, description="skip hostname checks (test benches only)")


class BrokerSettings(BaseModel):
    """Where and how to reach the MQTT broker."""

    model_config = ConfigDict(extra="forbid")
    url: str = "mqtt://127.0.0.1:1883"
    protocol: Literal["5", "3.1.1"] = "5"
    username: str | None = None
    password_file: Path | None = Field(None, description="file holding the password (0600)")
    keepalive: int = Field(30, ge=5, le=3600)
    tls: TlsSettings | None = None

    @field_validator("url")
    @classmethod
    def _check_url(cls, url: str) -> str:
        parts = urlsplit(url)
        if parts.scheme not in ("mqtt", "mqtts") or not parts.hostname:
            raise ValueError("broker url must look like mqtt://host:port or mqtts://host:port")
        return url

    @property
    def host(self) -> str:
        return urlsplit(self.url).hostname or "127.0.0.1"

    @property
    def port(self) -> int:
        parts = urlsplit(self.url)
        return parts.port or (8883 if parts.scheme == "mqtts" else 1883)

    @property
    def is_v5(self) -> bool:
        return self.protocol == "5"

    def tls_context(self) -> ssl.SSLContext | None:
        if urlsplit(self.url).scheme != "mqtts" and self.tls is None:
            return None
        tls = self.tls or TlsSettings()
        ctx = ssl.create_default_context(cafile=str(tls.ca_file) if tls.ca_file else None)
        if tls.cert_file:
            ctx.load_cert_chain(str(tls.cert_file), str(tls.key_file) if tls.key_file else None)
        if tls.insecure:
            ctx.check_hostname = False
        return ctx


@dataclass(frozen=True, slots=True)
class ClientOptions:
    identifier: str
    will: aiomqtt.Will | None = None
    max_inflight: int = 64
    clean_start: bool = True
    session_expiry_s: int = 0


def make_client(settings: BrokerSettings, options: ClientOptions) -> aiomqtt.Client:
    password = None
    if settings.password_file:
        password = settings.password_file.read_text().strip()
    properties = None
    if settings.is_v5 and options.session_expiry_s:
        properties = Properties(PacketTypes.CONNECT)
        properties.SessionExpiryInterval = options.session_expiry_s
    return aiomqtt.Client(
        settings.host,
        settings.port,
        identifier=options.identifier,
        username=settings.username,
        password=password,
        protocol=aiomqtt.ProtocolVersion.V5 if settings.is_v5 else aiomqtt.ProtocolVersion.V311,
        will=options.will,
        keepalive=settings.keepalive,
        tls_context=settings.tls_context(),
        max_inflight_messages=options.max_inflight,
        clean_start=options.clean_start if settings.is_v5 else 3,
        clean_session=None if settings.is_v5 else options.clean_start,
        properties=properties,
        timeout=10,
    )


REPLAYED_PROPERTY = "replayed"


def content_type_properties(
    settings: BrokerSettings, content_type: str, *, replayed: bool = False
) -> Properties | None:
    """PUBLISH properties: the MQTT 5 content type, and a user property for replays."""
    if not settings.is_v5:
        return None
    props = Properties(PacketTypes.PUBLISH)
    props.ContentType = content_type
    if replayed:
        props.UserProperty = [(REPLAYED_PROPERTY, "1")]
    return props


def message_replayed(message: aiomqtt.Message) -> bool:
    user = getattr(message.properties, "UserProperty", None) if message.properties else None
    return any(key == REPLAYED_PROPERTY and value == "1" for key, value in user or ())


def paho_client(client: aiomqtt.Client) -> Any:
    """The paho client inside aiomqtt: the one place that reaches past aiomqtt's public API
    (it has none for manual PUBACKs or the connection state). Re-check on aiomqtt upgrades."""
    return client._client


def set_no_delay(client: aiomqtt.Client) -> None:
    """TCP_NODELAY on a connected client's socket: a small QoS 1 publish right after another
    otherwise waits behind Nagle for the broker's delayed ACK (~40 ms on an idle link)."""
    sock = paho_client(client).socket()
    if isinstance(sock, socket.socket):
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def is_connected(client: aiomqtt.Client) -> bool:
    return bool(paho_client(client).is_connected())


def message_content_type(message: aiomqtt.Message) -> str | None:
    props = message.properties
    return getattr(props, "ContentType", None) if props is not None else None
