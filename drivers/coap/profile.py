"""CoAP driver profiles: which resource a device model serves and how its payload reads.

A ``profile.yaml`` with ``transport: coap`` (hardware/sensors/thermal-camera is the example)::

    name: thermal-camera
    family: thermal
    transport: coap
    path: /thermal              # the resource on the device
    mode: observe               # poll (GET on a schedule) or observe (RFC 7641)
    payload: senml              # senml (RFC 8428) or plain (JSON/CBOR mapped by `plain:`)
    accept: senml+cbor          # optional Accept option: ask for this representation
    names: {max: t_max}         # SenML name -> quantity, where the device's names differ
    frame: {name: frame, rows: 24, cols: 32, scale: 0.01}   # an IR array in a `vd` record
    points:                     # every quantity the driver reports (drivers/source_profile)
      - {name: t_max, unit: Cel, range: [-40, 300]}

The gateway builds its CoAP driver from ``CoapProfile.transport_config(uri)`` (or
``decoder()`` for a driver of its own); a thermal frame arrives as a
``drivers.coap.payload.Blob`` named ``{device}/{frame_quantity}`` and reads back with
``frame.decode(blob.data)``.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from drivers.coap.client import CoapTransportConfig
from drivers.coap.payload import (
    PayloadDecoder,
    PlainDecoder,
    PlainProfile,
    SenmlDecoder,
    decode_frame_i16,
)
from drivers.source_profile import Problems, SourceProfileBase, StrictModel, check_known_quantities

__all__ = ["CoapProfile", "FrameSpec"]


class FrameSpec(StrictModel):
    """A 2-D array carried as a SenML `vd` value: row-major little-endian int16 * scale."""

    name: str = Field("frame", min_length=1, description="SenML record name carrying the vd")
    rows: int = Field(ge=1, le=1024)
    cols: int = Field(ge=1, le=1024)
    scale: float = Field(0.01, gt=0, description="value of one count (0.01 Cel)")
    encoding: Literal["int16le"] = "int16le"

    @property
    def size_bytes(self) -> int:
        return 2 * self.rows * self.cols

    def decode(self, data: bytes) -> list[list[float]]:
        """The frame as rows of values; PayloadError if the size is not rows x cols."""
        return decode_frame_i16(data, self.rows, self.cols, self.scale)


class CoapProfile(SourceProfileBase):
    transport: Literal["coap"]
    path: str = Field(pattern=r"^/[^?#\s]*$", description="resource path on the device")
    mode: Literal["poll", "observe"] = "poll"
    payload: Literal["senml", "plain"] = "senml"
    accept: Literal["senml+json", "senml+cbor"] | None = None
    names: dict[str, str] = Field(default_factory=dict)  # SenML name (n, or bn+n) -> quantity
    plain: PlainProfile | None = None
    frame: FrameSpec | None = None

    def _mapping_problems(self) -> Problems:
        problems: Problems = []
        if self.payload == "plain":
            if self.plain is None:
                problems.append((("payload",), "payload: plain needs a `plain:` mapping", "plain"))
            for key in ("names", "frame", "accept"):
                if key in self.model_fields_set:
                    problems.append(((key,), f"{key} applies to payload: senml only", key))
        elif self.plain is not None:
            problems.append((("plain",), "`plain:` applies to payload: plain only", {}))
        if problems:
            return problems
        mapped: list[tuple[tuple[str | int, ...], str]] = [
            (("names", key), quantity) for key, quantity in self.names.items()
        ]
        frame_name = self.frame_quantity
        if frame_name is not None:
            mapped = [(loc, q) for loc, q in mapped if q != frame_name]  # a blob, not a point
            if frame_name in self.point_names:
                return [
                    (
                        ("frame", "name"),
                        f"{frame_name!r} is the frame (a vd blob), it cannot also be a point",
                        frame_name,
                    )
                ]
        if self.plain is not None:
            mapped += [
                (("plain", "fields", index, "quantity"), spec.quantity)
                for index, spec in enumerate(self.plain.fields)
            ]
        return check_known_quantities(self, mapped)

    @property
    def accept_format(self) -> int | None:
        return {"senml+json": 110, "senml+cbor": 112}.get(self.accept or "")

    @property
    def frame_quantity(self) -> str | None:
        """The quantity a frame blob is named by (``{device}/{frame_quantity}``)."""
        if self.frame is None:
            return None
        return self.names.get(self.frame.name, self.frame.name)

    def resource_uri(self, authority: str, scheme: str = "coap") -> str:
        """``coap://{authority}{path}``: authority is host[:port] of the device."""
        return f"{scheme}://{authority}{self.path}"

    def transport_config(self, uri: str, **overrides: Any) -> CoapTransportConfig:
        """The gateway's ``transport: {type: coap}`` block for one device of this model;
        `overrides` (timeout, silence_s, mode, ...) win over the profile."""
        fields: dict[str, Any] = {
            "type": "coap",
            "uri": uri,
            "mode": self.mode,
            "accept": self.accept,
            "payload": self.payload,
            "plain": self.plain,
            "names": dict(self.names),
        }
        return CoapTransportConfig.model_validate({**fields, **overrides})

    def decoder(self) -> PayloadDecoder:
        """payload bytes + content format -> Records (and blobs), per this profile."""
        if self.plain is not None:
            return PlainDecoder(self.plain)
        return SenmlDecoder(self.names)
