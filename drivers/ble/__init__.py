"""Bluetooth LE southbound: BTHome v2 advertisements (scanner) and GATT notifications.

BLE is optional on a gateway: a board without a radio, a container without the host's D-Bus,
or a host without BlueZ must not stop the other drivers. Every bleak failure that means "no
BLE here" becomes :class:`BleUnavailable` with a message that says what to fix.
"""

from __future__ import annotations

__all__ = ["BleUnavailable", "as_unavailable"]


class BleUnavailable(RuntimeError):
    """No usable Bluetooth LE stack: no adapter, no BlueZ, no D-Bus, or no bleak."""


_DBUS_HINT = (
    "no D-Bus system bus (is dbus running? in a container, mount /run/dbus and run bluetoothd "
    "on the host)"
)


def as_unavailable(exc: BaseException, *, any_bleak_error: bool = True) -> BleUnavailable | None:
    """The BleUnavailable that `exc` means, or None when it is some other failure.

    `any_bleak_error`: count every other BleakError as "no BLE" too (a scan that cannot
    start); a GATT connection passes False, since there "device not found" is the device's
    problem, retried, not the stack's.

    bleak reports a missing system bus as a bare FileNotFoundError (the socket path), a
    refused one as ConnectionRefusedError/PermissionError, a missing BlueZ as BleakDBusError
    (org.freedesktop.DBus.Error.ServiceUnknown), a missing or unpowered adapter as
    BleakBluetoothNotAvailableError or BleakError("adapter ... not found").
    """
    if isinstance(exc, BleUnavailable):
        return exc
    if isinstance(exc, ImportError):
        return BleUnavailable(f"bleak is not installed ({exc})")
    if isinstance(exc, FileNotFoundError | ConnectionRefusedError):
        return BleUnavailable(f"{_DBUS_HINT}: {exc}")
    if isinstance(exc, PermissionError):
        return BleUnavailable(f"D-Bus refused access to BlueZ (policy or user group): {exc}")
    try:
        from bleak.exc import BleakBluetoothNotAvailableError, BleakDBusError, BleakError
    except ImportError:
        return None
    if isinstance(exc, BleakBluetoothNotAvailableError):
        return BleUnavailable(f"no usable Bluetooth adapter: {exc.args[0]}")
    if isinstance(exc, BleakDBusError):
        if exc.dbus_error == "org.freedesktop.DBus.Error.ServiceUnknown":
            return BleUnavailable("BlueZ (bluetoothd) is not running on the system bus")
        return BleUnavailable(f"BlueZ refused: {exc}")
    if isinstance(exc, BleakError):
        text = str(exc)
        if any_bleak_error or ("adapter" in text and "not found" in text):
            return BleUnavailable(f"Bluetooth LE unavailable: {text}")
        return None
    if isinstance(exc, OSError):
        return BleUnavailable(f"Bluetooth LE unavailable: {exc}")
    return None
