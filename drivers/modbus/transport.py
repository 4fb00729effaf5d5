"""One owner per Modbus TCP endpoint: one transaction at a time, per-request timeout.

A pymodbus client serialises its requests anyway; the explicit lock makes the ownership
visible and lets several devices (unit ids) behind one gateway/endpoint share the client.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Literal

from pymodbus.client import AsyncModbusTcpClient
from pymodbus.exceptions import ModbusException

from drivers.modbus.planner import ReadRequest

log = logging.getLogger(__name__)

ErrorKind = Literal["timeout", "exception", "connection", "decode"]


class ModbusReadError(Exception):
    def __init__(self, kind: ErrorKind, detail: str) -> None:
        super().__init__(f"{kind}: {detail}")
        self.kind: ErrorKind = kind


class ModbusTcpEndpoint:
    def __init__(self, host: str, port: int, timeout: float = 1.0) -> None:
        self.host = host
        self.port = port
        self.timeout = timeout
        # retries=0: the poller decides what a failure means; a retry storm against a dead
        # slave is exactly how the peers stall a bus.
        self._client = AsyncModbusTcpClient(
            host, port=port, timeout=timeout, retries=0, reconnect_delay=0
        )
        self._lock = asyncio.Lock()

    @property
    def label(self) -> str:
        return f"{self.host}:{self.port}"

    async def _ensure_connected(self) -> None:
        if self._client.connected:
            return
        try:
            # asyncio.timeout, not wait_for: 3.11's wait_for can swallow a cancellation
            # and keep a stopped gateway polling.
            async with asyncio.timeout(self.timeout):
                ok = await self._client.connect()
        except (TimeoutError, OSError, ModbusException) as exc:
            raise ModbusReadError("connection", f"{self.label}: {exc or 'timed out'}") from None
        if not ok:
            raise ModbusReadError("connection", f"cannot connect to {self.label}")

    async def read(self, request: ReadRequest, device_id: int) -> list[int] | list[bool]:
        async with self._lock:
            await self._ensure_connected()
            call = {
                "coil": self._client.read_coils,
                "discrete": self._client.read_discrete_inputs,
                "holding": self._client.read_holding_registers,
                "input": self._client.read_input_registers,
            }[request.table]
            try:
                async with asyncio.timeout(self.timeout * 1.5):
                    response = await call(request.address, count=request.count, device_id=device_id)
            except TimeoutError:
                raise ModbusReadError("timeout", f"unit {device_id} at {self.label}") from None
            except ModbusException as exc:
                # pymodbus reports a missing reply as a ModbusIOException.
                kind: ErrorKind = "timeout" if "No response" in str(exc) else "connection"
                raise ModbusReadError(kind, f"unit {device_id} at {self.label}: {exc}") from None
            except OSError as exc:
                raise ModbusReadError("connection", f"{self.label}: {exc}") from None
        if response.isError():
            code = getattr(response, "exception_code", "?")
            raise ModbusReadError("exception", f"unit {device_id} exception code {code}")
        if request.table in ("coil", "discrete"):
            return list(response.bits[: request.count])
        return list(response.registers)

    async def close(self) -> None:
        self._client.close()
