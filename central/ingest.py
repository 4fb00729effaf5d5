"""Ingest: validate → dedup → store → rules → warnings, for a batch of MQTT messages.

Synchronous and transport-free so that the MQTT service, tests and offline replay tools all
drive the same code. The service never crashes on input: every rejected message is counted
by reason against the gateway named in its topic.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from central.config import GasRuleConfig
from central.fusion import AssetLevelFusion
from central.registry import AssetRegistry
from central.rules.base import Transition
from central.rules.engine import RuleEngine
from central.rules.gas import GasCh4Rule
from central.rules.spec import RuleBook, load_rulebook
from central.store import Store
from central.timecheck import TIME_IMPLAUSIBLE, time_flag
from central.warnings import IssuedMessage, WarningManager
from cloud_bridge.mqtt import parse_topic
from cloud_bridge.senml import Pack, PackRejected, decode_pack

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Inbound:
    topic: str
    payload: bytes
    content_type: str | None
    received_at: float
    replayed: bool = False  # the gateway sent it from its backlog (MQTT 5 user property)


class IngestPipeline:
    def __init__(
        self,
        store: Store,
        registry: AssetRegistry,
        warnings: WarningManager,
        rules: Sequence[GasCh4Rule] = (),
        *,
        rules_dir: Path | None = None,
        book: RuleBook | None = None,
    ) -> None:
        """``rules``: legacy CH4 rules; the first one's config is the CH4 base thresholds
        (central config ``rules.gas_ch4``) under every rule set's ``gas_ch4`` rule.
        ``rules_dir``: the operator's rule sets (central config ``rules_dir``), read again by
        :meth:`reload_rules`. ``book``: rule sets already loaded (tests, offline replay)."""
        self.store = store
        self.registry = registry
        self.warnings = warnings
        self.rules = list(rules)
        self.rules_dir = rules_dir
        gas_base = self.rules[0].cfg if self.rules else GasRuleConfig()
        self._registry_version: object = None
        self.engine = RuleEngine(
            book if book is not None else load_rulebook(rules_dir),
            registry.asset_for,
            registry.info,
            gas_base,
        )
        self.rejected: Counter[str] = Counter()
        # False with several workers: the leader judges queued packs (central/evaluator.py).
        self.evaluate_inline = True
        # (site, gateway) -> epoch -> seqs stored (or already stored) since the last take.
        self._confirmations: dict[tuple[str, str], dict[int, list[int]]] = {}
        self.fusion = AssetLevelFusion()
        self.late_fusion = AssetLevelFusion()
        for warning in warnings.active.values():
            self.fusion.restore(warning.asset, warning.warning_type, warning.level)  # type: ignore[arg-type]

    def _reject(self, gateway: str, reason: str, detail: str) -> None:
        self.rejected[reason] += 1
        self.store.record_rejection(gateway, reason, detail)
        log.warning("rejected message from %s: %s: %s", gateway, reason, detail)

    def _confirm(self, site: str, gateway: str, epoch: int, seq: int) -> None:
        by_epoch = self._confirmations.setdefault((site, gateway), {})
        by_epoch.setdefault(epoch, []).append(seq)

    def take_confirmations(self) -> dict[tuple[str, str], dict[int, list[int]]]:
        """Packs committed since the last call, for the gateways' end-to-end confirmation."""
        taken, self._confirmations = self._confirmations, {}
        return taken

    def handle(self, batch: Sequence[Inbound]) -> list[IssuedMessage]:
        packs: list[Pack] = []
        sites: dict[str, str] = {}
        received_at = batch[-1].received_at if batch else 0.0
        for msg in batch:
            parsed = parse_topic(msg.topic)
            if parsed is None:
                self._reject("?", "bad_topic", msg.topic[:200])
                continue
            site, gateway, kind = parsed
            if kind == "state":
                self._handle_state(site, gateway, msg)
                continue
            if kind != "telemetry":
                self._reject(gateway, "bad_topic", msg.topic[:200])
                continue
            try:
                pack = decode_pack(msg.payload, msg.content_type)
            except PackRejected as exc:
                self._reject(gateway, exc.reason, exc.detail)
                if exc.key is not None and exc.key[0] == gateway:
                    # Confirm it anyway: it can never be stored, and re-sending it forever
                    # would only repeat this rejection (it is counted above).
                    self._confirm(site, *exc.key)
                continue
            except Exception as exc:  # never crash on input; count it and keep going
                self._reject(gateway, "internal_error", repr(exc))
                continue
            if pack.gateway != gateway:
                self._reject(gateway, "gateway_mismatch", f"pack says '{pack.gateway}'")
                continue
            if msg.replayed and not pack.replayed:
                pack = dataclasses.replace(pack, replayed=True)
            packs.append(pack)
            sites[gateway] = site
        if not packs:
            return []
        result = self.store.ingest(packs, received_at)
        for pack in packs:  # stored now, or stored before (a duplicate): either way, safe
            self._confirm(sites[pack.gateway], *pack.key)
        if not self.evaluate_inline:
            return []
        return self.evaluate(result.new, received_at)

    def _handle_state(self, site: str, gateway: str, msg: Inbound) -> None:
        try:
            body = json.loads(msg.payload)
            state = body["state"]
            if not isinstance(body, dict) or state not in ("online", "offline"):
                raise ValueError("state must be online or offline")
        except (ValueError, KeyError, TypeError) as exc:
            self._reject(gateway, "bad_state", str(exc)[:200])
            return
        epoch = body.get("epoch") if isinstance(body.get("epoch"), int) else None
        birth = body if state == "online" and isinstance(body.get("devices"), list) else None
        if birth:
            self.registry.learn_birth(gateway, birth)
            self.engine.rebind()  # device bindings may have changed
        self.engine.set_gateway_state(gateway, state)
        self.store.update_gateway(gateway, site, state, epoch, birth, msg.received_at)

    def evaluate(self, packs: Sequence[Pack], received_at: float) -> list[IssuedMessage]:
        """Judge newly stored readings on event time: rules, fusion, warning lifecycle."""
        issued: list[IssuedMessage] = []
        self._follow_registry()
        samples = [
            (record.time, pack.gateway, record)
            for pack in packs
            for record in pack.records
            # A reading from 1970 or from the future is stored (flagged) but never judged.
            if time_flag(record, received_at) != TIME_IMPLAUSIBLE
        ]
        samples.sort(key=lambda s: s[0])  # rules judge on event time
        judge = self.engine.judge
        for t, gateway, record in samples:
            lane, asset, transitions = judge(gateway, record)
            if lane == "skipped":
                continue
            fusion = self.late_fusion if lane == "late" else self.fusion
            for tr in transitions:
                self._fuse(fusion, asset, tr.asset, t, tr, issued)
            settling = fusion.settling(asset)
            if settling:
                series = f"{gateway}/{record.name}"
                for warning_type in tuple(settling):
                    self._fuse_type(fusion, asset, warning_type, series, t, issued)
        for asset, tr in self.engine.check_progress():
            self._fuse(self.fusion, asset, tr.asset, tr.event_time, tr, issued)
        return issued

    def _fuse(
        self,
        fusion: AssetLevelFusion,
        asset: str,
        source: str,
        t: float,
        tr: Transition | None,
        issued: list[IssuedMessage],
    ) -> None:
        assert tr is not None
        fused = fusion.update(asset, tr.warning_type, source, t, tr)
        if fused is not None:
            message = self.warnings.apply(fused)
            if message is not None:
                issued.append(message)

    def _fuse_type(
        self,
        fusion: AssetLevelFusion,
        asset: str,
        warning_type: str,
        source: str,
        t: float,
        issued: list[IssuedMessage],
    ) -> None:
        fused = fusion.update(asset, warning_type, source, t, None)
        if fused is not None:
            message = self.warnings.apply(fused)
            if message is not None:
                issued.append(message)

    def _follow_registry(self) -> None:
        """Assets edited in the registry (API, import): rebuild their rules. Uses the
        registry's ``version()`` where it offers one (a number that changes with every
        edit); without it, edits reach the rules at the next ``reload_rules``."""
        version = getattr(self.registry, "version", None)
        if not callable(version):
            return
        current = version()
        if current != self._registry_version:
            if self._registry_version is not None:
                self.engine.invalidate()
                self.fusion.reseat()
                self.late_fusion.reseat()
            self._registry_version = current

    def tick(self, now: float) -> list[IssuedMessage]:
        """Wall-clock liveness: call about once a second; returns the CAP messages issued
        (``sensor_offline`` for series silent longer than their limit)."""
        issued: list[IssuedMessage] = []
        for asset, tr in self.engine.tick(now):
            self._fuse(self.fusion, asset, tr.asset, tr.event_time, tr, issued)
        return issued

    def reload_rules(self) -> list[str]:
        """Read the rule sets again (shipped + ``rules_dir``) without a restart.

        Raises ConfigError (file:line field) and keeps the rules in force when a file is bad.
        Active warnings are held as restored placeholders until the rebuilt rules have seen
        a few readings (as after a restart). Returns problems with per-asset overrides."""
        book = load_rulebook(self.rules_dir)
        self.engine.replace_book(book)
        self.fusion.reseat()
        self.late_fusion.reseat()
        return list(self.engine.problems)
