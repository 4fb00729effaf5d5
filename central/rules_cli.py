"""`sentryline rules test`: replay recorded readings through the rules, offline.

Readings go through the same ingest pipeline as in the service (store → rules → fusion →
warning lifecycle → CAP) with a temporary SQLite store and no broker; what it would have
issued is printed. Readings files:

* CSV with a header ``time,device,quantity,value[,unit]``: time as POSIX seconds or ISO 8601
  (UTC when no offset), device as ``gateway/device`` or just ``device`` (gateway ``replay``),
  value a number, ``true``/``false`` or text;
* SenML JSON: one pack (an array of records) or an array of packs, as gateways publish them
  (``.jsonl``: one pack per line).

``--layout`` is an assets YAML in the shape of central config ``assets:``.
"""

from __future__ import annotations

import csv
import json
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import typer
from pydantic import BaseModel, ConfigDict, Field

from central.cap import parse_cap
from central.config import AssetConfig, CapConfig, GasRuleConfig
from central.ingest import Inbound, IngestPipeline
from central.registry import AssetRegistry
from central.rules.gas import GasCh4Rule
from central.rules.spec import load_rulebook
from central.store import Store
from central.warnings import WarningManager
from cloud_bridge.mqtt import telemetry_topic
from cloud_bridge.senml import Pack, PackRejected, Record, decode_pack, encode_pack
from provisioning.configfile import ConfigError, load_yaml_model

app = typer.Typer(
    help="Rules: replay readings offline, see what would be issued.", no_args_is_help=True
)

DEFAULT_GATEWAY = "replay"
PACK_SIZE = 64


class Layout(BaseModel):
    model_config = ConfigDict(extra="forbid")
    assets: list[AssetConfig] = Field(default_factory=list)


class ReadingsError(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class Replayed:
    time: float
    asset: str
    warning_type: str
    msg_type: str
    level: str
    rule: str
    trigger: dict[str, str]
    late: bool

    def as_json(self) -> dict[str, Any]:
        return {
            "time": _iso(self.time),
            "asset": self.asset,
            "type": self.warning_type,
            "msgType": self.msg_type,
            "level": self.level,
            "rule": self.rule,
            "trigger": self.trigger,
            "late": self.late,
        }


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).isoformat().replace("+00:00", "Z")


def _parse_time(raw: str, where: str) -> float:
    raw = raw.strip()
    try:
        return float(raw)
    except ValueError:
        pass
    try:
        when = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        raise ReadingsError(
            f"{where}: time '{raw}' is neither POSIX seconds nor ISO 8601"
        ) from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.timestamp()


def _parse_value(raw: str) -> float | bool | str:
    text = raw.strip()
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    try:
        return float(text)
    except ValueError:
        return text


def read_csv(path: Path) -> list[tuple[str, Record]]:
    out: list[tuple[str, Record]] = []
    with path.open(newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        need = {"time", "device", "quantity", "value"}
        if reader.fieldnames is None or not need <= set(reader.fieldnames):
            raise ReadingsError(f"{path}:1: the header must name {', '.join(sorted(need))}")
        for row in reader:
            where = f"{path}:{reader.line_num}"
            device = (row["device"] or "").strip()
            quantity = (row["quantity"] or "").strip()
            if not device or not quantity:
                raise ReadingsError(f"{where}: device and quantity must not be empty")
            gateway, _, dev = device.rpartition("/")
            unit = (row.get("unit") or "").strip() or None
            record = Record(
                f"{dev}/{quantity}",
                _parse_time(row["time"], where),
                _parse_value(row["value"]),
                unit,
            )
            out.append((gateway or DEFAULT_GATEWAY, record))
    return out


def read_senml(path: Path) -> list[Pack]:
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".jsonl":
        items = [json.loads(line) for line in text.splitlines() if line.strip()]
    else:
        data = json.loads(text)
        items = data if data and isinstance(data[0], list) else [data]
    packs = []
    for i, item in enumerate(items):
        try:
            packs.append(decode_pack(json.dumps(item).encode(), "application/senml+json"))
        except PackRejected as exc:
            raise ReadingsError(f"{path}: pack {i + 1}: {exc}") from None
    return packs


def _packs_from_records(readings: list[tuple[str, Record]]) -> Iterator[Pack]:
    by_gateway: dict[str, list[Record]] = {}
    for gateway, record in sorted(readings, key=lambda r: r[1].time):
        by_gateway.setdefault(gateway, []).append(record)
    seq = 0
    for gateway, records in by_gateway.items():
        for i in range(0, len(records), PACK_SIZE):
            seq += 1
            yield Pack(gateway, 1, seq, tuple(records[i : i + PACK_SIZE]))


def load_packs(path: Path) -> list[Pack]:
    if not path.is_file():
        raise ReadingsError(f"{path}: no such file")
    try:
        if path.suffix.lower() == ".csv":
            return list(_packs_from_records(read_csv(path)))
        return read_senml(path)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ReadingsError(f"{path}: not a readings file: {exc}") from None


def replay(
    packs: list[Pack],
    assets: list[AssetConfig],
    rules_dir: Path | None = None,
    gas: GasRuleConfig | None = None,
) -> tuple[list[Replayed], list[str], dict[str, int]]:
    """Run ``packs`` through a fresh pipeline in event-time order.

    Returns what was issued, problems with per-asset rule overrides (and rejected packs),
    and the engine's quality counters (spikes dropped, out of range, skipped, out of order).
    """
    book = load_rulebook(rules_dir)
    ordered = sorted(packs, key=lambda p: min(r.time for r in p.records))
    out: list[Replayed] = []
    with tempfile.TemporaryDirectory(prefix="sentryline-rules-") as tmp:
        store = Store(Path(tmp) / "replay.db")
        try:
            registry = AssetRegistry(assets, {})
            clock = [0.0]
            warnings = WarningManager(store, CapConfig(), registry.info, clock=lambda: clock[0])
            pipeline = IngestPipeline(
                store, registry, warnings, [GasCh4Rule(gas or GasRuleConfig())], book=book
            )
            for pack in ordered:
                latest = max(r.time for r in pack.records)
                clock[0] = latest
                topic = telemetry_topic("replay", pack.gateway)
                msg = Inbound(topic, encode_pack(pack), None, latest + 1.0)
                for message in pipeline.handle([msg]):
                    params = parse_cap(message.xml)["parameters"]
                    rule = params.pop("RULE_ID", "")
                    late = params.get("LATE") == "TRUE"
                    for key in ("ASSET_ID", "WARNING_TYPE", "LATE", "CN_WARNING_LEVEL"):
                        params.pop(key, None)
                    out.append(
                        Replayed(
                            message.event_time,
                            message.asset,
                            message.warning_type,
                            message.msg_type,
                            message.level,
                            rule,
                            params,
                            late,
                        )
                    )
            problems = list(pipeline.engine.problems)
            rejected = dict(pipeline.rejected)
            counters = dict(pipeline.engine.counters)
        finally:
            store.close()
    if rejected:
        problems.append(f"rejected packs: {rejected}")
    return out, problems, counters


@app.command("test")
def test(
    readings: Path = typer.Option(..., "--readings", "-r", help="CSV or SenML JSON readings"),
    layout: Path | None = typer.Option(None, "--layout", "-l", help="assets YAML"),
    rules_dir: Path | None = typer.Option(None, "--rules-dir", help="operator rule sets"),
    as_json: bool = typer.Option(False, "--json", help="one JSON document on stdout"),
) -> None:
    """Replay recorded readings through the rules and print the warnings they would raise."""
    try:
        assets = load_yaml_model(layout, Layout).assets if layout else []
        packs = load_packs(readings)
        issued, problems, counters = replay(packs, assets, rules_dir)
    except ConfigError as exc:
        typer.echo(f"configuration error in {exc.source}:", err=True)
        typer.echo(str(exc), err=True)
        raise typer.Exit(2) from None
    except ReadingsError as exc:
        typer.echo(f"readings error: {exc}", err=True)
        raise typer.Exit(2) from None
    for problem in problems:
        typer.echo(f"warning: {problem}", err=True)
    count = sum(len(p.records) for p in packs)
    if as_json:
        doc = {
            "readings": count,
            "issued": [r.as_json() for r in issued],
            "quality": counters,
            "problems": problems,
        }
        typer.echo(json.dumps(doc, indent=2))
        return
    quality = ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in counters.items() if v)
    typer.echo(
        f"{count} readings replayed, {len(issued)} messages would be issued"
        + (f" (quality: {quality})" if quality else "")
    )
    for r in issued:
        trigger = " ".join(f"{k}={v}" for k, v in sorted(r.trigger.items()))
        typer.echo(
            f"{_iso(r.time)}  {r.asset:<16} {r.warning_type:<20} {r.msg_type:<6} "
            f"{r.level:<6} {r.rule:<24} {trigger}"
        )
