"""The rule engine: one reading in, transitions out, on event time, per series and lane.

Per reading (the hot path; no allocation unless something happens):

1. the series (gateway, device/quantity) is looked up in a two-level dict and bound once to
   its asset, the asset's rule set and the rules that consume its quantity;
2. lane: newer than the series' live data → live; older (a replayed backlog) → the late
   lane, with its own contexts and rule instances; older than both → skipped;
3. quality first: the gateway's ``q`` (fail → not judged; suspect → rules cap at blue), then
   the rule set's checks: gross range and flat line (stuck) raise ``sensor_fault``; a spike
   (a jump that comes straight back) is dropped;
4. the asset context takes the value (multi-series rules read it) and each rule runs.

Liveness: a series of a quantity its rule set knows is offline when nothing came for
``ut × ut_factor`` (or ``missed_reports`` × its observed interval), judged on its gateway's
event-time progress after each batch (:meth:`check_progress`) and on the wall clock
(:meth:`tick`; skipped for gateways that said they are offline — that is a gateway outage,
reported as such, not a dead sensor).
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

from central.config import GasRuleConfig
from central.registry import AssetInfo
from central.rules.base import Transition
from central.rules.context import AssetContext, Rule, SharedState, make_transition
from central.rules.spec import (
    LivenessSpec,
    QualitySpec,
    RuleBook,
    RuleSetFile,
    build_rule,
    with_overrides,
)
from cloud_bridge.senml import Record

log = logging.getLogger(__name__)

Lane = Literal["live", "late", "skipped"]
FAULT_WARNING = "sensor_fault"
OFFLINE_WARNING = "sensor_offline"
_NOTHING: tuple[Transition, ...] = ()


@dataclass(slots=True)
class _Quality:
    """Quality state of one series in one lane."""

    last_ok: float | None = None  # the last value accepted
    pending_t: float = 0.0
    pending_v: float | None = None  # a big jump held back one reading (spike or step?)
    flat_ref: float | None = None
    flat_since: float = 0.0
    out_of_range: bool = False
    stuck: bool = False
    good_run: int = 0
    faulted: bool = False  # a sensor_fault is raised for this series


@dataclass(slots=True)
class _AssetRules:
    """The rules of one asset in one lane, and its context."""

    ctx: AssetContext
    by_quantity: dict[str, tuple[Rule, ...]]


@dataclass(slots=True)
class _Series:
    key: str
    gateway: str
    quantity: str
    gen: int = -1
    asset: str = ""
    live: _AssetRules | None = None
    late: _AssetRules | None = None
    rules_live: tuple[Rule, ...] = ()
    rules_late: tuple[Rule, ...] = ()
    qspec: QualitySpec | None = None
    liveness: LivenessSpec | None = None
    tracked: bool = False  # liveness is judged for it
    last_live: float = -math.inf
    last_late: float = -math.inf
    ut: float | None = None
    interval: float | None = None
    offline: bool = False
    q_live: _Quality = field(default_factory=_Quality)
    q_late: _Quality = field(default_factory=_Quality)


class RuleEngine:
    def __init__(
        self,
        book: RuleBook,
        asset_for: Callable[[str, str], str],
        asset_info: Callable[[str], AssetInfo],
        gas_base: GasRuleConfig | None = None,
    ) -> None:
        self.book = book
        self._asset_for = asset_for
        self._asset_info = asset_info
        self.gas_base = gas_base or GasRuleConfig()
        self.gen = 0
        self._series: dict[str, dict[str, _Series]] = {}
        self._assets: dict[tuple[str, bool], _AssetRules] = {}
        self._shared = {False: SharedState(), True: SharedState()}
        self._progress: dict[str, float] = {}  # gateway -> newest live event time
        self._touched: set[str] = set()
        self._next_due: dict[str, float] = {}  # gateway -> earliest possible offline time
        self.gateway_offline: set[str] = set()
        self.gateway_silent: set[str] = set()  # every series overdue at once (tick)
        self.problems: list[str] = []  # bad per-asset overrides, reported not fatal
        self.counters = {"skipped_quality": 0, "out_of_order": 0, "spikes": 0, "range": 0}

    def set_gateway_state(self, gateway: str, state: str) -> None:
        """A gateway that said it is offline: its sensors' silence is not theirs."""
        if state == "offline":
            self.gateway_offline.add(gateway)
        else:
            self.gateway_offline.discard(gateway)

    # --- configuration ----------------------------------------------------------------
    def replace_book(self, book: RuleBook) -> None:
        """New rule sets: every asset rebuilds its rules (their state starts afresh)."""
        self.book = book
        self.invalidate()

    def rebind(self) -> None:
        """Device bindings may have changed (a gateway's birth): every series looks up its
        asset again on its next reading; the rules of assets keep their state."""
        self.gen += 1

    def invalidate(self) -> None:
        """Assets or rule sets changed: rebuild every asset's rules (their state starts
        afresh; the pipeline holds active warnings meanwhile, see AssetLevelFusion.reseat)."""
        self.gen += 1
        self._assets.clear()
        self.problems.clear()

    def ruleset_for(self, asset: str) -> RuleSetFile:
        return self.book.for_type(self._asset_info(asset).type)

    def _asset_rules(self, asset: str, late: bool) -> _AssetRules:
        found = self._assets.get((asset, late))
        if found is not None:
            return found
        info = self._asset_info(asset)
        rs = self.book.for_type(info.type)
        overrides = info.meta.get("rules") if isinstance(info.meta.get("rules"), dict) else {}
        by_quantity: dict[str, list[Rule]] = {}
        for params in rs.rules:
            try:
                params = with_overrides(params, overrides.get(params.id))  # type: ignore[union-attr]
            except ValueError as exc:
                problem = f"asset '{asset}': meta.rules.{params.id}: {exc} (defaults kept)"
                if problem not in self.problems:
                    self.problems.append(problem)
                    log.error("%s", problem)
            if not params.enabled:
                continue
            rule = build_rule(params, self.gas_base, info)
            for q in rule.quantities:
                by_quantity.setdefault(q, []).append(rule)
        built = _AssetRules(
            AssetContext(info, self._shared[late], late),
            {q: tuple(rules) for q, rules in by_quantity.items()},
        )
        self._assets[(asset, late)] = built
        return built

    def _bind(self, s: _Series, device: str) -> None:
        s.gen = self.gen
        self._next_due.pop(s.gateway, None)  # a new deadline may be earlier than the known
        s.asset = self._asset_for(s.gateway, device)
        rs = self.ruleset_for(s.asset)
        s.live = self._asset_rules(s.asset, False)
        s.rules_live = s.live.by_quantity.get(s.quantity, ())
        s.late, s.rules_late = None, ()
        s.qspec = rs.quality.get(s.quantity)
        s.liveness = rs.liveness
        s.tracked = rs.liveness.enabled and (s.qspec is not None or bool(s.rules_live))

    # --- the hot path -------------------------------------------------------------------
    def judge(self, gateway: str, record: Record) -> tuple[Lane, str, tuple[Transition, ...]]:
        """Judge one reading; returns (lane, asset, transitions keyed by source in .asset)."""
        by_name = self._series.get(gateway)
        if by_name is None:
            by_name = self._series[gateway] = {}
        s = by_name.get(record.name)
        if s is None:
            s = by_name[record.name] = _Series(f"{gateway}/{record.name}", gateway, record.quantity)
        if s.gen != self.gen:
            self._bind(s, record.device)
        if record.quality == 4:
            self.counters["skipped_quality"] += 1
            return "skipped", s.asset, _NOTHING
        t = record.time
        out: list[Transition] | None = None
        if t > s.last_live:
            lane: Lane = "live"
            if s.tracked:
                out = self._alive(s, t, record.update_time)
            s.last_live = t
            rules, assets, q = s.rules_live, s.live, s.q_live
        elif t > s.last_late:
            lane = "late"
            s.last_late = t
            if s.late is None:
                s.late = self._asset_rules(s.asset, True)
                s.rules_late = s.late.by_quantity.get(s.quantity, ())
            rules, assets, q = s.rules_late, s.late, s.q_late
        else:
            self.counters["out_of_order"] += 1
            return "skipped", s.asset, _NOTHING
        value = record.value
        ctx = assets.ctx  # type: ignore[union-attr]
        if not rules and s.qspec is None:
            # Not judged itself, but other rules may read it (ethane beside methane, say).
            ctx.times[s.quantity] = t
            ctx.values[s.quantity] = value
            return lane, s.asset, tuple(out) if out else _NOTHING
        suspect = record.quality == 3
        ctx.ut = record.update_time
        if s.qspec is not None and type(value) is float:
            fault, accepted = self._quality(s, q, s.qspec, t, value)
            if fault is not None:
                out = out or []
                out.append(fault)
            for at, v in accepted:
                out = self._run(rules, ctx, s, at, v, suspect, out)
        else:
            out = self._run(rules, ctx, s, t, value, suspect, out)
        if not out:
            return lane, s.asset, _NOTHING
        if lane == "late":
            out = [dataclasses.replace(tr, late=True) for tr in out]
        return lane, s.asset, tuple(out)

    def _run(
        self,
        rules: tuple[Rule, ...],
        ctx: AssetContext,
        s: _Series,
        t: float,
        value: float | bool | str,
        suspect: bool,
        out: list[Transition] | None,
    ) -> list[Transition] | None:
        ctx.times[s.quantity] = t
        ctx.values[s.quantity] = value
        for rule in rules:
            got = rule.step(ctx, s.key, s.quantity, t, value, suspect)
            if got is None:
                continue
            out = out or []
            if isinstance(got, Transition):
                out.append(got)
            else:
                out.extend(got)
        return out

    # --- quality ------------------------------------------------------------------------
    _ONE: tuple = ()

    def _quality(
        self, s: _Series, q: _Quality, spec: QualitySpec, t: float, v: float
    ) -> tuple[Transition | None, list[tuple[float, float]] | tuple]:
        """(a sensor_fault transition or None, the readings to judge now)."""
        lo, hi = spec.min, spec.max
        accepted: list[tuple[float, float]] | tuple = ((t, v),)
        if (lo is not None and v < lo) or (hi is not None and v > hi):
            self.counters["range"] += 1
            q.out_of_range, q.good_run = True, 0
            accepted = ()
        else:
            if spec.flat_s is not None:
                if q.flat_ref is not None and abs(v - q.flat_ref) <= spec.flat_tol:
                    if t - q.flat_since >= spec.flat_s:
                        q.stuck = True
                else:
                    q.flat_ref, q.flat_since, q.stuck = v, t, False
            if q.stuck:
                accepted = ()
            elif spec.spike is not None:
                accepted = self._despike(q, spec.spike, t, v)
            if not q.stuck:
                q.good_run += 1
                if q.good_run >= spec.clear_samples:
                    q.out_of_range = False
        bad = q.out_of_range or q.stuck
        if bad == q.faulted:
            return None, accepted
        q.faulted = bad
        what = "out of its range" if q.out_of_range else "stuck (flat line)"
        rule_id = "quality.range" if q.out_of_range else "quality.flat_line"
        return (
            make_transition(
                s.key,
                FAULT_WARNING,
                "blue" if bad else None,
                t,
                rule_id if bad else "quality.cleared",
                {"SERIES": s.key, "VALUE": f"{v:g}"},
                f"{s.key}: {what}" if bad else f"{s.key}: readings plausible again",
            ),
            accepted,
        )

    def _despike(self, q: _Quality, spike: float, t: float, v: float):
        """Hold a big jump back one reading: back to the old level → a spike (dropped)."""
        if q.pending_v is not None:
            held_t, held_v = q.pending_t, q.pending_v
            q.pending_v = None
            if q.last_ok is not None and abs(v - q.last_ok) <= spike:
                self.counters["spikes"] += 1
                q.last_ok = v
                return ((t, v),)
            q.last_ok = v
            return ((held_t, held_v), (t, v))  # a real step: judge both, in order
        if q.last_ok is not None and abs(v - q.last_ok) > spike:
            q.pending_t, q.pending_v = t, v
            return ()
        q.last_ok = v
        return ((t, v),)

    # --- liveness -----------------------------------------------------------------------
    def _limit(self, s: _Series) -> float | None:
        spec = s.liveness
        if spec is None:
            return None
        if s.ut:
            limit = spec.ut_factor * s.ut
        elif s.interval:
            limit = spec.missed_reports * s.interval
        else:
            return None
        return max(limit, spec.min_s)

    def _alive(self, s: _Series, t: float, ut: float | None) -> list[Transition] | None:
        if ut:
            s.ut = ut  # the gateway says when to expect the next one: no estimate needed
        elif s.last_live != -math.inf:
            gap = t - s.last_live
            s.interval = gap if s.interval is None else 0.8 * s.interval + 0.2 * gap
        gateway = s.gateway
        if t > self._progress.get(gateway, -math.inf):
            self._progress[gateway] = t
            self._touched.add(gateway)
        if not s.offline:
            return None
        s.offline = False
        return [
            make_transition(
                s.key,
                OFFLINE_WARNING,
                None,
                t,
                "liveness.back",
                {"SERIES": s.key},
                f"{s.key}: reporting again",
            )
        ]

    def _offline(self, s: _Series, now: float, basis: str) -> Transition:
        s.offline = True
        silent = now - s.last_live
        return make_transition(
            s.key,
            OFFLINE_WARNING,
            "blue",
            now,
            f"liveness.{basis}",
            {"SERIES": s.key, "SILENT_S": f"{silent:.0f}"},
            f"{s.key}: no reading for {silent:.0f} s ({basis})",
        )

    def check_progress(self) -> list[tuple[str, Transition]]:
        """After a batch: series silent while their gateway's event time moved on."""
        out: list[tuple[str, Transition]] = []
        for gateway in self._touched:
            progress = self._progress[gateway]
            # Deadlines only move later as series report: until the earliest one found by
            # the last scan has passed, no series of this gateway can be overdue.
            if progress <= self._next_due.get(gateway, -math.inf):
                continue
            next_due = math.inf
            for s in self._series.get(gateway, {}).values():
                if not s.tracked or s.offline or s.gen != self.gen:
                    continue
                limit = self._limit(s)
                if limit is None:  # no ut and one reading so far: look again next batch
                    next_due = min(next_due, progress)
                    continue
                if progress - s.last_live > limit:
                    out.append((s.asset, self._offline(s, progress, "event_time")))
                else:
                    next_due = min(next_due, s.last_live + limit)
            self._next_due[gateway] = next_due
        self._touched.clear()
        return out

    def tick(self, now: float) -> list[tuple[str, Transition]]:
        """Series silent on the wall clock (gateways known to be offline excepted).

        When every series of a gateway is overdue at once, the gateway (or its uplink) is
        what went quiet, not its sensors: the broker's last will says so a keep-alive later,
        and the backlog arrives when it is back. Flagging each sensor offline would flood
        operators with one internal alarm per sensor (and the leader with CAP messages), so
        such a gateway is skipped; its series are still judged on its event-time progress.
        """
        out: list[tuple[str, Transition]] = []
        for gateway, by_name in self._series.items():
            if gateway in self.gateway_offline:
                continue
            overdue: list[_Series] = []
            live = 0
            for s in by_name.values():
                if not s.tracked or s.offline or s.last_live == -math.inf:
                    continue
                live += 1
                limit = self._limit(s)
                if limit is not None and now - s.last_live > limit:
                    overdue.append(s)
            if live > 1 and len(overdue) == live:
                if gateway not in self.gateway_silent:
                    self.gateway_silent.add(gateway)
                    log.warning("gateway %s: all %d series silent; waiting for it", gateway, live)
                continue
            self.gateway_silent.discard(gateway)
            out += [(s.asset, self._offline(s, now, "wall_clock")) for s in overdue]
        return out
