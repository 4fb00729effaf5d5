"""Rules as data: one YAML rule set per asset type, validated with pydantic.

Shipped defaults live in ``central/rulesets/<type>.yaml``; an operator directory (central
config ``rules_dir``) holds files of the same shape that replace a shipped set of the same
``type`` or add new types. Every error names file:line and the field.

Per asset, ``meta.rules.<rule id>`` overrides any parameter of one rule (validated when the
asset's rules are built; a bad override keeps the defaults and is reported, never fatal).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from central.config import GasRuleConfig
from central.registry import AssetInfo
from central.rules.context import Rule
from central.rules.displacement import DisplacementParams, DisplacementRule
from central.rules.elevator import ElevatorParams, ElevatorRule
from central.rules.gas import (
    CoDoseParams,
    CoDoseRule,
    GasCh4EngineRule,
    GasCh4Params,
    ToxicThresholdParams,
    ToxicThresholdRule,
)
from central.rules.thermal import ThermalParams, ThermalRule
from central.rules.water import (
    RainParams,
    RainRule,
    RiverForecastParams,
    RiverForecastRule,
    RiverLevelParams,
    RiverLevelRule,
)
from provisioning.configfile import ConfigError, load_yaml_model

SHIPPED_DIR = Path(__file__).resolve().parent.parent / "rulesets"
FALLBACK_TYPE = "generic"

AnyRule = Annotated[
    GasCh4Params
    | CoDoseParams
    | ToxicThresholdParams
    | RiverLevelParams
    | RiverForecastParams
    | RainParams
    | ElevatorParams
    | DisplacementParams
    | ThermalParams,
    Field(discriminator="kind"),
]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class QualitySpec(_Strict):
    """QARTOD-style checks of one quantity; a check left null is not run."""

    min: float | None = None
    max: float | None = None
    spike: float | None = Field(
        None, gt=0, description="a jump this large that comes straight back is a spike"
    )
    flat_s: float | None = Field(
        None, gt=0, description="no change beyond flat_tol for this long: stuck"
    )
    flat_tol: float = Field(0.0, ge=0)
    clear_samples: int = Field(3, ge=1, description="good readings before a fault clears")

    @model_validator(mode="after")
    def _range(self) -> QualitySpec:
        if self.min is not None and self.max is not None and self.min >= self.max:
            raise ValueError("min must be below max")
        return self


class LivenessSpec(_Strict):
    enabled: bool = True
    ut_factor: float = Field(1.5, gt=1, description="offline after ut × this")
    missed_reports: int = Field(3, ge=1, description="offline after this many missed reports")
    min_s: float = Field(5.0, ge=0, description="never offline sooner than this")


class RuleSetFile(_Strict):
    type: str = Field(pattern=r"^[a-z0-9][a-z0-9_.\-]{0,62}$")
    also_for: list[str] = Field(default_factory=list, description="other asset types it serves")
    description: str = ""
    liveness: LivenessSpec = LivenessSpec()
    quality: dict[str, QualitySpec] = Field(default_factory=dict)
    rules: list[AnyRule] = Field(default_factory=list)

    @model_validator(mode="after")
    def _ids(self) -> RuleSetFile:
        seen: set[str] = set()
        for rule in self.rules:
            if not rule.id:
                rule.id = rule.kind.replace("_", "-")
            if rule.id in seen:
                raise ValueError(f"two rules share the id '{rule.id}': give them distinct ids")
            seen.add(rule.id)
        return self


class RuleBook:
    """The rule sets in force, by asset type (a type without a set gets ``generic``)."""

    def __init__(self, sets: Iterable[RuleSetFile], sources: dict[str, str] | None = None):
        self.by_type: dict[str, RuleSetFile] = {}
        self.sources = sources or {}
        for rs in sets:
            for name in (rs.type, *rs.also_for):
                self.by_type[name] = rs

    def for_type(self, asset_type: str) -> RuleSetFile:
        found = self.by_type.get(asset_type) or self.by_type.get(FALLBACK_TYPE)
        return found if found is not None else RuleSetFile(type=FALLBACK_TYPE)

    @property
    def quantities(self) -> frozenset[str]:
        out: set[str] = set()
        for rs in self.by_type.values():
            out.update(rs.quality)
        return frozenset(out)


def load_rulebook(operator_dir: Path | None = None, shipped_dir: Path = SHIPPED_DIR) -> RuleBook:
    """Shipped sets, then the operator's (same ``type`` replaces). Raises ConfigError."""
    sets: dict[str, RuleSetFile] = {}
    sources: dict[str, str] = {}
    dirs = [shipped_dir] + ([operator_dir] if operator_dir is not None else [])
    for directory in dirs:
        if directory is operator_dir and not directory.is_dir():
            raise ConfigError(str(directory), [_problem("rules_dir is not a directory")])
        for path in sorted(directory.glob("*.yaml")):
            rs = load_yaml_model(path, RuleSetFile)
            sets[rs.type] = rs
            sources[rs.type] = str(path)
    return RuleBook(sets.values(), sources)


def _problem(message: str):
    from provisioning.configfile import ConfigProblem

    return ConfigProblem(None, None, "", message)


def with_overrides(params: Any, override: Any) -> Any:
    """``params`` with an asset's ``meta.rules.<id>`` mapping applied; ValueError if bad."""
    if not override:
        return params
    if not isinstance(override, dict):
        raise ValueError("must be a mapping of parameter: value")
    data = params.model_dump(exclude_unset=True) | {"kind": params.kind, "id": params.id}
    try:
        return type(params).model_validate(_deep_merge(data, override))
    except ValidationError as exc:
        raise ValueError("; ".join(_short(e) for e in exc.errors())) from None


def _deep_merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def _short(err: Any) -> str:
    where = ".".join(str(p) for p in err["loc"])
    return f"{where}: {err['msg']}" if where else err["msg"]


def build_rule(params: Any, gas_base: GasRuleConfig, info: AssetInfo) -> Rule:
    """One rule instance for one (asset, lane)."""
    rid = params.id
    match params:
        case GasCh4Params():
            return GasCh4EngineRule(params, gas_base, info, rid)
        case CoDoseParams():
            return CoDoseRule(params, rid)
        case ToxicThresholdParams():
            return ToxicThresholdRule(params, rid)
        case RiverLevelParams():
            return RiverLevelRule(params, info, rid)
        case RiverForecastParams():
            return RiverForecastRule(params, info, rid)
        case RainParams():
            return RainRule(params, rid)
        case ElevatorParams():
            return ElevatorRule(params, info, rid)
        case DisplacementParams():
            return DisplacementRule(params, info, rid)
        case ThermalParams():
            return ThermalRule(params, rid)
    raise TypeError(f"no rule for {type(params).__name__}")
