"""Find a Modbus profile's driver decoder (the folder's optional decoder.py) for the gateway.

A device config names its profile the way ``load_profile`` takes it: a driver name
(built-in, SENTRYLINE_DRIVER_PATH or an installed package), a driver folder, or a
profile.yaml path. When that profile belongs to a driver folder whose driver.yaml names a
decoder, the gateway applies it to every poll (drivers/modbus/bus.py). Flat legacy profiles
(hardware/sensors/<name>.yaml) have no driver and no decoder.
"""

from __future__ import annotations

from pathlib import Path

from drivers.modbus.bus import PointDecoder
from drivers.modbus.profile import DeviceProfile, _looks_like_path
from drivers.registry import (
    MANIFEST_FILE,
    PROFILE_FILE,
    DriverInfo,
    get_driver,
    load_driver,
    profile_path,
)

__all__ = ["DriverDecoders"]


class DriverDecoders:
    """Decoder lookups for one gateway build: each driver is found once, and every device
    gets its own decoder instance (a decoder may keep per-device state)."""

    def __init__(self) -> None:
        self._drivers: dict[str, DriverInfo | None] = {}

    def for_device(self, profile_name: str, profile: DeviceProfile) -> PointDecoder | None:
        """The decoder for a device of `profile_name`; ConfigError (file:line) if its
        driver names a decoder that cannot be loaded."""
        if profile_name not in self._drivers:
            self._drivers[profile_name] = _find_driver(profile_name)
        driver = self._drivers[profile_name]
        return None if driver is None else driver.decoder(profile)


def _find_driver(profile_name: str) -> DriverInfo | None:
    if _looks_like_path(profile_name):
        path = Path(profile_name)
        folder = path if path.is_dir() else path.parent if path.name == PROFILE_FILE else None
        if folder is None or not (folder / MANIFEST_FILE).is_file():
            return None
        return load_driver(folder)
    found = profile_path(profile_name)
    if found is None or found.name != PROFILE_FILE or not (found.parent / MANIFEST_FILE).is_file():
        return None  # a flat legacy profile: no driver folder, no decoder
    return get_driver(profile_name)
