"""`sentryline driver new`: a new driver folder that passes the contract as written.

The folder has everything the registry and the contract suite need (manifest, a profile
with two example points, a scenario, a README), so a maintainer starts from green and
edits towards the real device, running the contract after each step. Every transport with
a simulator can be scaffolded: modbus-tcp, modbus-rtu (a register map), coap (a SenML
resource), serial-line (an NMEA-style sentence), ble-bthome (BTHome objects), ble-gatt
(SIG characteristics).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import get_args

from drivers.registry import (
    DRIVER_NAME_PATTERN,
    MANIFEST_FILE,
    PROFILE_FILE,
    README_FILE,
    SCENARIO_FILE,
    Family,
    Transport,
)

__all__ = ["FAMILIES", "TRANSPORTS", "ScaffoldError", "scaffold_driver"]

FAMILIES: tuple[str, ...] = get_args(Family)
TRANSPORTS: tuple[str, ...] = get_args(Transport)
_MODBUS = ("modbus-tcp", "modbus-rtu")


class ScaffoldError(ValueError):
    """The driver cannot be created (bad name, unknown family, folder exists)."""


@dataclass(frozen=True, slots=True)
class _Example:
    """The family's first suggested quantity as a scaled 16-bit register."""

    name: str
    unit: str
    type: str
    scale: float
    low: float
    high: float
    baseline: float
    peak: float
    noise: float
    description: str


_EXAMPLES: dict[str, _Example] = {
    "gas": _Example(
        "ch4_lel", "/", "uint16", 0.001, 0, 1, 0.02, 0.3, 0.002, "Methane, LEL fraction"
    ),
    "water": _Example("level", "m", "uint16", 0.001, 0, 30, 1.2, 2.4, 0.005, "Water level"),
    "elevator": _Example("speed", "m/s", "int16", 0.01, -8, 8, 0.0, 2.0, 0.01, "Car speed"),
    "displacement": _Example("crack", "mm", "uint16", 0.01, 0, 100, 1.2, 1.8, 0.01, "Crack width"),
    "thermal": _Example("t_max", "Cel", "int16", 0.1, -40, 300, 21.0, 65.0, 0.2, "Hottest pixel"),
    "other": _Example("temperature", "Cel", "int16", 0.1, -40, 85, 20.0, 24.0, 0.1, "Temperature"),
}


def scaffold_driver(
    name: str,
    directory: Path,
    family: str = "other",
    transport: str = "modbus-tcp",
) -> Path:
    """Write directory/name/ with a working driver; returns the folder.

    Refuses a bad name, an unknown family or transport, and an existing folder (nothing
    is ever overwritten).
    """
    if not re.match(DRIVER_NAME_PATTERN, name):
        raise ScaffoldError(
            f"driver name {name!r}: lower-case letters, digits and '-', starting with a "
            "letter or digit, at most 63 characters"
        )
    if family not in FAMILIES:
        raise ScaffoldError(f"family {family!r}: one of {', '.join(FAMILIES)}")
    if transport not in TRANSPORTS:
        raise ScaffoldError(f"transport {transport!r}: one of {', '.join(TRANSPORTS)}")
    if not directory.is_dir():
        raise ScaffoldError(f"{directory} is not a directory")
    folder = directory / name
    try:
        folder.mkdir()
    except FileExistsError:
        raise ScaffoldError(f"{folder} already exists; nothing was written") from None
    example = _EXAMPLES[family]
    if transport in _MODBUS:
        profile, scenario = _profile(name, family, transport, example), _scenario(name, example)
        readme = _readme(name, family, transport, example)
    else:
        profile = _SOURCE_PROFILES[transport](name, family, example)
        scenario = _source_scenario(name, transport, example)
        readme = _source_readme(name, family, transport, example)
    files = {
        MANIFEST_FILE: _manifest(name, family, transport),
        PROFILE_FILE: profile,
        SCENARIO_FILE: scenario,
        README_FILE: readme,
    }
    for file_name, text in files.items():
        (folder / file_name).write_text(text, encoding="utf-8")
    return folder


def _manifest(name: str, family: str, transport: str) -> str:
    return f"""\
# The driver's identity; the device model (register map, payload, sentences, objects) is
# profile.yaml. See docs/drivers.md.
name: {name}
family: {family}
transport: {transport}
version: 0.1.0
description: >-
  TODO: what the device is and measures, and how many requests a poll takes.
manufacturer: TODO
models: [TODO model name]
maintainers: [TODO your name]
# decoder: decoder:Decoder   # optional: decoder.py in this folder, see docs/drivers.md
"""


def _profile(name: str, family: str, transport: str, example: _Example) -> str:
    return f"""\
# Register map of {name}. Two example points: replace them with the device's map,
# copying address, type, word order and scale from the vendor's register table.
# Field reference: docs/drivers.md ("profile.yaml").
name: {name}
family: {family}
transport: {transport}
manufacturer: TODO
description: TODO one line on the map (tables and address ranges used)

modbus:
  max_gap: 8          # unused registers read through rather than a second request
  max_registers: 120  # lower it if the device refuses long reads
  # block_reads: false  # if the device refuses reads spanning several values

points:
  - name: {example.name}
    table: holding
    address: 0
    type: {example.type}
    scale: {example.scale:g}
    unit: "{example.unit}"
    range: [{example.low:g}, {example.high:g}]
    description: {example.description} (example point)

  - name: fault
    table: holding
    address: 1
    bit: 0
    description: Device fault flag, bit 0 of the status word (example point)
"""


def _scenario(name: str, example: _Example) -> str:
    rise = example.peak
    return f"""\
# Contract scenario of {name}: what the simulator serves and the contract tests read back.
# Every point of the profile needs a value or a signal here. Add the faults the device
# really shows (see docs/drivers.md "Scenario"): stuck, spike, silent, and on Modbus RTU
# slow and garbage.
name: {name}-contract
description: TODO what happens to the device in this scenario
duration: 60

devices:
  - id: {name}-1
    profile: {name}
    device_id: 1
    values:
      fault: false
    signals:
      {example.name}:
        baseline: {example.baseline:g}
        noise: {example.noise:g}
        phases:
          - {{at: 10, ramp_to: {rise:g}, over: 20}}
          - {{at: 30, hold: 10}}
          - {{at: 40, ramp_to: {example.baseline:g}, over: 15}}
    faults:
      - {{at: 20, kind: spike, point: {example.name}, value: {example.high:g}}}
      - {{at: 45, until: 48, kind: silent}}
      # - {{at: 30, until: 35, kind: stuck, point: {example.name}}}
      # - {{at: 50, until: 52, kind: slow, delay: 0.3}}   # modbus-rtu only
      # - {{at: 53, until: 55, kind: garbage}}            # modbus-rtu only
"""


def _readme(name: str, family: str, transport: str, example: _Example) -> str:
    return f"""\
# {name}

TODO: the device (vendor, model, what it measures, where it is installed) and its default
line settings (baud rate, parity, unit id) for {transport}.

| Point | Registers | Type | Scale | Unit | Range |
|---|---|---|---|---|---|
| `{example.name}` | holding 0 | {example.type} | {example.scale:g} | `{example.unit}` \
| {example.low:g}..{example.high:g} |
| `fault` | holding 1 bit 0 | bool | | | |

Family: {family}. Check the driver with `sentryline driver check {name}` (or
`pytest tests/test_driver_contract.py -k {name}`), with `SENTRYLINE_DRIVER_PATH` set to
this folder's parent while it lives outside hardware/sensors.

Quirks: TODO (word order, registers that must not be read, warm-up time, ...).
"""


# --- the other transports --------------------------------------------------------------------


def _points_yaml(example: _Example) -> str:
    return f"""\
points:
  - name: {example.name}
    unit: "{example.unit}"
    range: [{example.low:g}, {example.high:g}]
    description: {example.description} (example point)
  - name: fault
    kind: bool
    description: Device fault flag (example point)
"""


def _coap_profile(name: str, family: str, example: _Example) -> str:
    return f"""\
# CoAP device model of {name}: the resource the device serves and how its payload reads.
# Field reference: docs/drivers.md ("CoAP profiles").
name: {name}
family: {family}
transport: coap
manufacturer: TODO
description: TODO one line on the resource and its payload
path: /data             # the resource on the device
mode: poll              # poll (GET every poll interval) or observe (the device notifies)
payload: senml          # senml, or plain with a `plain:` field map
# accept: senml+cbor    # ask for CBOR if the device offers it
names:                  # the device's SenML record names -> quantities, where they differ
  {example.name}_raw: {example.name}

{_points_yaml(example)}"""


def _serial_profile(name: str, family: str, example: _Example) -> str:
    return f"""\
# Serial-line device model of {name}: the sentences it writes on its own and their fields.
# Field reference: docs/drivers.md ("Serial-line profiles").
name: {name}
family: {family}
transport: serial-line
manufacturer: TODO
description: TODO one line on the sentences and how often they come
framing: nmea           # $ID,field,field*HH lines; or binary with a `binary:` struct layout
serial: {{baudrate: 9600, parity: N, stopbits: 1, bytesize: 8}}
update_time: 1          # seconds between reports
sentences:
  DATA:                 # $DATA,<{example.name}>,<fault 1/0>*HH
    count: 2
    fields:
      - {{index: 0, quantity: {example.name}}}
      - {{index: 1, quantity: fault, type: bool}}

{_points_yaml(example)}"""


def _bthome_profile(name: str, family: str, example: _Example) -> str:
    del example  # BTHome objects have fixed meanings: start from the two every tag has
    return f"""\
# BTHome v2 device model of {name}: which advertised objects become which quantities.
# Field reference: docs/drivers.md ("BLE profiles"); object ids: bthome.io/format.
name: {name}
family: {family}
transport: ble-bthome
manufacturer: TODO
description: TODO one line on the tag and what it advertises
bthome:
  update_interval_s: 30     # the advertising period
  local_name: TODO-NAME     # the name it advertises, if any
  objects:                  # measurement -> quantity (plain rename, or with scale/offset)
    temperature: temperature
    battery: battery

points:
  - name: temperature
    unit: Cel
    range: [-40, 85]
    description: Tag temperature (example point)
  - name: battery
    unit: "%EL"
    range: [0, 100]
    description: Battery level (example point)
"""


def _gatt_profile(name: str, family: str, example: _Example) -> str:
    del example  # start from the SIG characteristics every environmental sensor has
    return f"""\
# GATT device model of {name}: the characteristics to subscribe to and how they decode.
# Field reference: docs/drivers.md ("BLE profiles").
name: {name}
family: {family}
transport: ble-gatt
manufacturer: TODO
description: TODO one line on the sensor and its characteristics
gatt:
  service: 181a             # Environmental Sensing; TODO the device's primary service
  standard: [2a6e, 2a19]    # SIG temperature (0.01 Cel) and battery level (%)
  # characteristics:        # vendor ones: struct format, fields in order
  #   - {{uuid: ff01, format: "<hB", fields: [{{quantity: strain, scale: 0.1}}]}}

points:
  - name: temperature
    unit: Cel
    range: [-40, 85]
    description: Sensor temperature (example point)
  - name: battery
    unit: "%EL"
    range: [0, 100]
    description: Battery level (example point)
"""


_SOURCE_PROFILES = {
    "coap": _coap_profile,
    "serial-line": _serial_profile,
    "ble-bthome": _bthome_profile,
    "ble-gatt": _gatt_profile,
}


def _source_scenario(name: str, transport: str, example: _Example) -> str:
    if transport.startswith("ble-"):
        definitions = """\
    signals:
      temperature:
        baseline: 21
        noise: 0.05
        phases:
          - {at: 10, ramp_to: 30, over: 40}
      battery: {baseline: 88}
    faults:
      - {at: 20, kind: spike, point: temperature, value: 80}
      - {at: 45, until: 48, kind: silent}
      - {at: 50, until: 52, kind: garbage}
"""
    else:
        definitions = f"""\
    values:
      fault: false
    signals:
      {example.name}:
        baseline: {example.baseline:g}
        noise: {example.noise:g}
        phases:
          - {{at: 10, ramp_to: {example.peak:g}, over: 20}}
          - {{at: 30, hold: 10}}
          - {{at: 40, ramp_to: {example.baseline:g}, over: 15}}
    faults:
      - {{at: 20, kind: spike, point: {example.name}, value: {example.high:g}}}
      - {{at: 45, until: 48, kind: silent}}
      - {{at: 50, until: 52, kind: garbage}}
"""
    return f"""\
# Contract scenario of {name}: what the simulator sends over {transport} and the contract
# tests read back. Every point of the profile needs a value or a signal here. Faults the
# simulator can show (docs/drivers.md "Scenario"): stuck, spike, silent, garbage, and on
# CoAP slow.
name: {name}-contract
description: TODO what happens to the device in this scenario
duration: 60

devices:
  - id: {name}-1
    profile: {name}
    interval: 1           # seconds between reports
{definitions}"""


def _source_readme(name: str, family: str, transport: str, example: _Example) -> str:
    if transport == "ble-bthome":
        table = """\
| BTHome object | Quantity | Unit | Range |
|---|---|---|---|
| 0x02 temperature | `temperature` | `Cel` | -40..85 |
| 0x01 battery | `battery` | `%EL` | 0..100 |
"""
    elif transport == "ble-gatt":
        table = """\
| Characteristic | Quantity | Unit | Range |
|---|---|---|---|
| 0x2A6E temperature (sint16, 0.01 Cel) | `temperature` | `Cel` | -40..85 |
| 0x2A19 battery level (uint8, %) | `battery` | `%EL` | 0..100 |
"""
    else:
        where = {"coap": f"SenML `{example.name}_raw`", "serial-line": "`$DATA` field 0"}
        flag = {"coap": "SenML `fault` (vb)", "serial-line": "`$DATA` field 1 (1/0)"}
        table = f"""\
| Quantity | On the wire | Unit | Range |
|---|---|---|---|
| `{example.name}` | {where[transport]} | `{example.unit}` | {example.low:g}..{example.high:g} |
| `fault` | {flag[transport]} | bool | |
"""
    return f"""\
# {name}

TODO: the device (vendor, model, what it measures, where it is installed) and how it is
reached over {transport} (address, line settings, advertising name).

{table}
Family: {family}. Check the driver with `sentryline driver check {name}` (or
`pytest tests/test_driver_contract.py -k {name}`), with `SENTRYLINE_DRIVER_PATH` set to
this folder's parent while it lives outside hardware/sensors.

Quirks: TODO (timing, firmware versions, values that need care).
"""
