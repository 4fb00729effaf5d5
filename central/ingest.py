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

from central.fusion import AssetLevelFusion
from central.registry import AssetRegistry
from central.rules.gas import GasCh4Rule
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
        rules: Sequence[GasCh4Rule],
    ) -> None:
        self.store = store
        self.registry = registry
        self.warnings = warnings
        self.rules = list(rules)
        self.rejected: Counter[str] = Counter()
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
        self.store.update_gateway(gateway, site, state, epoch, birth, msg.received_at)

    def evaluate(self, packs: Sequence[Pack], received_at: float) -> list[IssuedMessage]:
        issued: list[IssuedMessage] = []
        by_quantity = {rule.quantity: rule for rule in self.rules}
        samples = [
            (record.time, pack.gateway, record)
            for pack in packs
            for record in pack.records
            if record.quantity in by_quantity
            and isinstance(record.value, float)
            # A reading from 1970 or from the future is stored (flagged) but never judged.
            and time_flag(record, received_at) != TIME_IMPLAUSIBLE
        ]
        samples.sort(key=lambda s: s[0])  # rules judge on event time
        for t, gateway, record in samples:
            rule = by_quantity[record.quantity]
            series = f"{gateway}/{record.name}"
            judged = rule.judge(
                series,
                t,
                record.value,
                record.quality,
                record.update_time,  # type: ignore[arg-type]
            )
            if judged.lane == "skipped":
                continue
            asset = self.registry.asset_for(gateway, record.device)
            fusion = self.late_fusion if judged.lane == "late" else self.fusion
            fused = fusion.update(asset, rule.warning_type, series, t, judged.transition)
            if fused is not None:
                message = self.warnings.apply(fused)
                if message is not None:
                    issued.append(message)
        return issued
