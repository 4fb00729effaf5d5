"""Read sites and assets from a YAML or CSV file, check them, and apply them in one go.

YAML: ``{sites: [...], assets: [...]}`` with the same asset fields as central's config;
problems name ``file:line:column field``. CSV: one asset per row, header
``id,name,type,site,lat,lon,radius_km,devices,geometry,meta.<key>...`` (``devices``
space-separated ``gateway/device``; ``geometry`` ``lat lon; lat lon; ...``); problems name
``file: row N, column C``. Nothing is written unless the whole file is valid.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from central.config import AssetConfig
from central.registry import (
    RegistryStore,
    SiteConfig,
    SiteInfo,
    asset_from_config,
    split_ref,
)
from provisioning.configfile import ConfigError, ConfigProblem, load_yaml_model


class RegistryFile(BaseModel):
    model_config = ConfigDict(extra="forbid")
    sites: list[SiteConfig] = Field(default_factory=list)
    assets: list[AssetConfig] = Field(default_factory=list)


@dataclass(slots=True)
class ImportPlan:
    sites: list[SiteConfig]
    assets: list[AssetConfig]
    created: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    rebound: list[str] = field(default_factory=list)  # devices moved from another asset


_CSV_COLUMNS = ("id", "name", "type", "site", "lat", "lon", "radius_km", "devices", "geometry")


def read_registry_file(path: Path) -> RegistryFile:
    """Parse and validate; every problem is a ConfigError naming where it is."""
    if path.suffix.lower() == ".csv":
        return _read_csv(path)
    if path.suffix.lower() not in (".yaml", ".yml"):
        raise ConfigError(
            str(path), [ConfigProblem(None, None, "", "expected .yaml, .yml or .csv")]
        )
    data = load_yaml_model(path, RegistryFile)
    _check_unique(str(path), data, lambda i, column: (None, f"assets[{i}].{column}"))
    return data


def _check_unique(source: str, data: RegistryFile, where) -> None:
    problems = []
    ids: set[str] = set()
    devices: dict[str, str] = {}
    for i, asset in enumerate(data.assets):
        line, name = where(i, "id")
        if asset.id in ids:
            problems.append(ConfigProblem(line, None, name, f"duplicate id '{asset.id}'"))
        ids.add(asset.id)
        for ref in asset.devices:
            if ref in devices:
                problems.append(
                    ConfigProblem(
                        line,
                        None,
                        where(i, "devices")[1],
                        f"'{ref}' is already bound to '{devices[ref]}' in this file",
                    )
                )
            devices[ref] = asset.id
    if problems:
        raise ConfigError(source, problems)


def _read_csv(path: Path) -> RegistryFile:
    source = str(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(source, [ConfigProblem(None, None, "", f"cannot read: {exc}")]) from None
    reader = csv.DictReader(io.StringIO(text, newline=""))
    header = reader.fieldnames or []
    unknown = [c for c in header if c not in _CSV_COLUMNS and not c.startswith("meta.")]
    if "id" not in header or unknown:
        message = f"unknown column(s) {unknown}" if unknown else "the header needs an 'id' column"
        raise ConfigError(source, [ConfigProblem(1, None, "header", message)])
    problems: list[ConfigProblem] = []
    assets: list[AssetConfig] = []
    rows: list[int] = []
    for row in reader:
        line = reader.line_num
        if None in row:
            problems.append(ConfigProblem(line, None, "row", "more cells than header columns"))
            continue
        try:
            data = _csv_row(row)
        except ValueError as exc:
            column, message = exc.args
            problems.append(ConfigProblem(line, None, f"row {line}, column {column}", message))
            continue
        try:
            assets.append(AssetConfig.model_validate(data))
            rows.append(line)
        except ValidationError as exc:
            for err in exc.errors():
                column = _csv_column(err["loc"])
                problems.append(
                    ConfigProblem(line, None, f"row {line}, column {column}", err["msg"])
                )
    if problems:
        raise ConfigError(source, problems)
    result = RegistryFile(assets=assets)
    _check_unique(source, result, lambda i, column: (rows[i], f"row {rows[i]}, column {column}"))
    return result


def _cell_value(text: str) -> Any:
    """meta cells: numbers stay numbers, true/false are booleans, the rest is text."""
    for convert in (int, float):
        try:
            return convert(text)
        except ValueError:
            pass
    return {"true": True, "false": False}.get(text.lower(), text)


def _csv_row(row: dict[str, str]) -> dict[str, Any]:
    cells = {k: (v or "").strip() for k, v in row.items()}
    data: dict[str, Any] = {"id": cells["id"]}
    for key in ("name", "type", "site", "radius_km"):
        if cells.get(key):
            data[key] = cells[key]
    lat, lon = cells.get("lat", ""), cells.get("lon", "")
    if lat or lon:
        if not (lat and lon):
            raise ValueError("lat" if not lat else "lon", "lat and lon go together")
        data["location"] = {"lat": lat, "lon": lon}
    if cells.get("devices"):
        data["devices"] = cells["devices"].replace(",", " ").split()
    if cells.get("geometry"):
        points = []
        for pair in cells["geometry"].split(";"):
            parts = pair.split()
            if len(parts) != 2:
                raise ValueError("geometry", f"'{pair.strip()}' is not 'lat lon'")
            points.append({"lat": parts[0], "lon": parts[1]})
        data["geometry"] = points
    meta = {k[5:]: _cell_value(v) for k, v in cells.items() if k.startswith("meta.") and v}
    if meta:
        data["meta"] = meta
    return data


def _csv_column(loc: Sequence[Any]) -> str:
    head = str(loc[0]) if loc else "id"
    if head == "location" and len(loc) > 1:
        return str(loc[1])
    if head == "meta" and len(loc) > 1:
        return f"meta.{loc[1]}"
    return head


def plan_import(store: RegistryStore, data: RegistryFile) -> ImportPlan:
    """What applying ``data`` would change (nothing is written)."""
    plan = ImportPlan(data.sites, data.assets)
    existing = {a.id: a for a in store.assets()}
    bindings = store.bindings()
    for config in data.assets:
        new = asset_from_config(config)
        old = existing.get(config.id)
        bucket = plan.created if old is None else plan.unchanged if old == new else plan.updated
        bucket.append(config.id)
        for ref in config.devices:
            if bindings.get(ref) not in (None, config.id):
                plan.rebound.append(f"{ref}: {bindings[ref]} -> {config.id}")
    return plan


def apply_import(store: RegistryStore, plan: ImportPlan) -> None:
    """All or nothing: one transaction."""
    with store.db.transaction():
        for site in plan.sites:
            store.put_site(SiteInfo(site.id, site.name or site.id, site.meta))
        for config in plan.assets:
            store.put_asset(asset_from_config(config), "import")
            for ref in config.devices:
                store.bind(*split_ref(ref), config.id)
