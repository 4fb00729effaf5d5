"""Sensor drivers: one folder per device model, found by scanning folders and entry points.

A driver folder (docs/drivers.md has the whole guide)::

    <name>/driver.yaml        manifest: name, family, transport, version, description[, decoder]
    <name>/profile.yaml       the device model: a register map (drivers.modbus.profile.
                              DeviceProfile) or, per transport, drivers.coap.profile.
                              CoapProfile, drivers.serial.profile.SerialLineProfile,
                              drivers.ble.profile.BleProfile
    <name>/scenario.yaml      a simulator scenario the contract tests serve and read back
    <name>/README.md          wiring, settings, quirks of the device
    <name>/decoder.py         optional: a class that post-processes decoded values
    <name>/test_<name>.py     optional: the driver's own tests ('-' becomes '_')

Where drivers come from, in precedence order:

* ``built-in``: every folder under hardware/sensors/;
* ``path``: every folder under the directories listed in ``SENTRYLINE_DRIVER_PATH``
  (``os.pathsep``-separated), for drivers under development or kept out of tree;
* ``package``: entry points of the group ``sentryline.drivers`` (a separate pip package);
  the entry point's name is the driver's name and its object is the package (module)
  whose directory is the driver folder, or a callable returning the folder's path.

Nothing is cached and nothing is registered at import time: every call looks again, so a
folder added while a process runs is seen by its next call.
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import os
import sys
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from importlib.metadata import EntryPoint, entry_points
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Annotated, Any, Literal, Protocol, runtime_checkable

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, create_model
from pydantic_core import PydanticCustomError

from drivers.ble.profile import BleProfile
from drivers.coap.profile import CoapProfile
from drivers.modbus.codec import Value
from drivers.modbus.profile import DeviceProfile, hardware_dir
from drivers.serial.profile import SerialLineProfile
from drivers.sim.scenario import Scenario
from provisioning.configfile import ConfigError, ConfigProblem, load_yaml_model

if TYPE_CHECKING:
    from drivers.sim.source_scenario import SourceScenario

__all__ = [
    "DRIVER_NAME_PATTERN",
    "DRIVER_PATH_ENV",
    "ENTRY_POINT_GROUP",
    "MANIFEST_FILE",
    "MODBUS_TRANSPORTS",
    "PROFILE_FILE",
    "PROFILE_MODELS",
    "README_FILE",
    "SCENARIO_FILE",
    "Decoder",
    "DriverInfo",
    "DriverManifest",
    "Family",
    "RegistryError",
    "Source",
    "SourceProfile",
    "Transport",
    "builtin_dir",
    "driver_test_file",
    "driver_transport",
    "get_driver",
    "list_drivers",
    "load_driver",
    "load_source_profile",
    "profile_names",
    "profile_path",
    "scan_drivers",
]

ENTRY_POINT_GROUP = "sentryline.drivers"
DRIVER_PATH_ENV = "SENTRYLINE_DRIVER_PATH"
MANIFEST_FILE = "driver.yaml"
PROFILE_FILE = "profile.yaml"
SCENARIO_FILE = "scenario.yaml"
README_FILE = "README.md"

# Folder names are driver names: lower case, digits and '-', so they read the same in a
# URL, a config file and a file system that ignores case.
DRIVER_NAME_PATTERN = r"^[a-z0-9][a-z0-9-]{0,62}$"
_VERSION_PATTERN = r"^\d+\.\d+\.\d+(?:[-+][0-9A-Za-z.-]+)?$"
_DECODER_PATTERN = r"^[A-Za-z_][A-Za-z0-9_.]*:[A-Za-z_][A-Za-z0-9_]*$"

Source = Literal["built-in", "path", "package"]
# The same choices as DeviceProfile (tests/test_driver_registry.py keeps them equal).
Family = Literal["gas", "water", "elevator", "displacement", "thermal", "other"]
Transport = Literal["modbus-tcp", "modbus-rtu", "coap", "serial-line", "ble-bthome", "ble-gatt"]
MODBUS_TRANSPORTS: frozenset[str] = frozenset({"modbus-tcp", "modbus-rtu"})

SourceProfile = DeviceProfile | CoapProfile | SerialLineProfile | BleProfile
# profile.yaml's model per transport (every model has name, family, transport and points).
PROFILE_MODELS: dict[str, type[SourceProfile]] = {
    "modbus-tcp": DeviceProfile,
    "modbus-rtu": DeviceProfile,
    "coap": CoapProfile,
    "serial-line": SerialLineProfile,
    "ble-bthome": BleProfile,
    "ble-gatt": BleProfile,
}


class DriverManifest(BaseModel):
    """driver.yaml: what the driver is; the register map lives in profile.yaml."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=DRIVER_NAME_PATTERN)
    family: Family
    transport: Transport
    version: str = Field(pattern=_VERSION_PATTERN)
    description: str = Field(min_length=1)
    manufacturer: str = ""
    models: list[str] = []  # the device models this driver is known to fit
    maintainers: list[str] = []
    # "module:Class": module decoder.py of the folder (or an importable module); the class
    # is built with the DeviceProfile and must have decode(values) -> values.
    decoder: str | None = Field(default=None, pattern=_DECODER_PATTERN)


@runtime_checkable
class Decoder(Protocol):
    """Optional post-processing of one poll's decoded values (profile point names in,
    profile point names out): vendor formats a register map cannot express."""

    def decode(self, values: Mapping[str, Value]) -> dict[str, Value]: ...


class RegistryError(Exception):
    """Some drivers could not be registered; str() is one line per problem."""

    def __init__(self, problems: list[ConfigError]) -> None:
        super().__init__(problems)
        self.problems = problems

    def __str__(self) -> str:
        return "\n".join(str(p) for p in self.problems)


@dataclass(frozen=True, slots=True)
class DriverInfo:
    manifest: DriverManifest
    folder: Path
    source: Source
    package: str | None = None  # the distribution that installed it (package drivers)
    module: str | None = None  # the importable package that is the folder (package drivers)

    @property
    def name(self) -> str:
        return self.manifest.name

    @property
    def family(self) -> str:
        return self.manifest.family

    @property
    def transport(self) -> str:
        return self.manifest.transport

    @property
    def version(self) -> str:
        return self.manifest.version

    @property
    def manifest_path(self) -> Path:
        return self.folder / MANIFEST_FILE

    @property
    def profile_path(self) -> Path:
        return self.folder / PROFILE_FILE

    @property
    def scenario_path(self) -> Path:
        return self.folder / SCENARIO_FILE

    @property
    def readme_path(self) -> Path:
        return self.folder / README_FILE

    @property
    def test_path(self) -> Path | None:
        path = self.folder / driver_test_file(self.name)
        return path if path.is_file() else None

    @property
    def is_modbus(self) -> bool:
        return self.manifest.transport in MODBUS_TRANSPORTS

    def profile(self) -> SourceProfile:
        """The validated profile, of the model for the driver's transport (a Modbus driver's
        is a DeviceProfile); its name, family and transport must match the manifest."""
        # Transport first: it picks the model, and a profile of another transport would
        # otherwise fail as a heap of unknown fields instead of the one line that is wrong.
        reason = f"the value in {self.manifest_path}"
        _require_values(self.profile_path, {"transport": self.manifest.transport}, reason)
        profile = load_yaml_model(self.profile_path, PROFILE_MODELS[self.manifest.transport])
        expected = {
            "name": self.name,
            "family": self.manifest.family,
            "transport": self.manifest.transport,
        }
        if any(getattr(profile, key) != value for key, value in expected.items()):
            _require_values(self.profile_path, expected, reason)
        return profile

    def scenario(self) -> Scenario | SourceScenario:
        """scenario.yaml: a Modbus Scenario, or a SourceScenario for other transports."""
        if self.is_modbus:
            return load_yaml_model(self.scenario_path, Scenario)
        from drivers.sim.source_scenario import SourceScenario  # it imports this module

        return load_yaml_model(self.scenario_path, SourceScenario)

    def decoder(self, profile: SourceProfile) -> Decoder | None:
        """An instance of the manifest's decoder class, or None if it names none."""
        if self.manifest.decoder is None:
            return None
        module_name, _, class_name = self.manifest.decoder.partition(":")
        try:
            module = self._decoder_module(module_name)
            decoder = getattr(module, class_name)(profile)
        except Exception as exc:  # whatever the maintainer's code raises, say where
            raise _problem(
                self.manifest_path, "decoder", f"cannot load {self.manifest.decoder}: {exc!r}"
            ) from exc
        if not isinstance(decoder, Decoder):
            raise _problem(
                self.manifest_path, "decoder", f"{self.manifest.decoder} has no decode(values)"
            )
        return decoder

    def _decoder_module(self, module_name: str) -> ModuleType:
        file = self.folder / f"{module_name.replace('.', '/')}.py"
        if not file.is_file():
            return importlib.import_module(module_name)
        if self.module is not None:  # a package driver: keep its relative imports working
            return importlib.import_module(f"{self.module}.{module_name}")
        # A folder on disk: its name is not importable ("water-level"), so load the file
        # under a name of its own, unique per driver.
        qualified = f"sentryline_driver_{self.name.replace('-', '_')}.{module_name}"
        spec = importlib.util.spec_from_file_location(qualified, file)
        if spec is None or spec.loader is None:
            raise ImportError(f"cannot load {file}")
        module = importlib.util.module_from_spec(spec)
        sys.modules[qualified] = module  # dataclasses and pickling look modules up here
        try:
            spec.loader.exec_module(module)
        except BaseException:
            del sys.modules[qualified]
            raise
        return module

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "family": self.family,
            "transport": self.transport,
            "version": self.version,
            "source": self.source,
            "package": self.package,
            "description": self.manifest.description,
            "folder": str(self.folder),
        }


# --- discovery ------------------------------------------------------------------------------


def builtin_dir() -> Path:
    """hardware/sensors: the built-in driver folders (and the flat legacy profiles)."""
    return hardware_dir() / "sensors"


def driver_test_file(driver_name: str) -> str:
    """A driver's own test module: test_<name>.py with '-' as '_' (pytest imports it)."""
    return f"test_{driver_name.replace('-', '_')}.py"


def list_drivers() -> list[DriverInfo]:
    """Every driver, sorted by name; RegistryError if any folder or entry point is broken.

    Strict on purpose: the contract suite collects from this list, so a broken driver
    fails the suite instead of silently dropping out of it.
    """
    drivers, problems = scan_drivers()
    if problems:
        raise RegistryError(problems)
    return drivers


def get_driver(name: str) -> DriverInfo:
    """One driver by name (other drivers' problems do not matter); ConfigError if unknown."""
    drivers, problems = scan_drivers()
    for driver in drivers:
        if driver.name == name:
            return driver
    for problem in problems:
        if _names_driver(problem, name):
            raise problem
    available = ", ".join(d.name for d in drivers) or "none"
    raise ConfigError(
        name, [ConfigProblem(None, None, "", f"unknown driver; available: {available}")]
    )


def load_driver(
    folder: Path,
    source: Source = "path",
    *,
    name: str | None = None,
    package: str | None = None,
    module: str | None = None,
) -> DriverInfo:
    """Read one driver folder's manifest; ConfigError (file:line: field: message) if wrong.

    The manifest's name must be `name` (an entry point's name) or else the folder's name.
    """
    manifest_path = folder / MANIFEST_FILE
    if not folder.is_dir():
        raise ConfigError(str(folder), [ConfigProblem(None, None, "", "no such driver folder")])
    manifest = load_yaml_model(manifest_path, DriverManifest)
    expected = name if name is not None else folder.name
    if manifest.name != expected:
        why = "the entry point's name" if name is not None else "the folder's name"
        _require_values(manifest_path, {"name": expected}, why)
    missing = [f for f in (PROFILE_FILE, SCENARIO_FILE, README_FILE) if not (folder / f).is_file()]
    if missing:
        raise ConfigError(
            str(folder),
            [ConfigProblem(None, None, "", f"driver folder lacks {f}") for f in missing],
        )
    return DriverInfo(manifest, folder, source, package, module)


def profile_path(name: str) -> Path | None:
    """Where load_profile(name) finds the profile, in precedence order; None if nowhere."""
    for candidate in _profile_candidates(name):
        if candidate.is_file():
            return candidate
    return None


def profile_names() -> list[str]:
    """Every name profile_path() resolves (for error messages and listings)."""
    names: set[str] = set()
    root = builtin_dir()
    if root.is_dir():
        names.update(p.stem for p in root.glob("*.yaml"))
        names.update(p.parent.name for p in root.glob(f"*/{PROFILE_FILE}"))
    for directory in _path_dirs():
        names.update(p.parent.name for p in directory.glob(f"*/{PROFILE_FILE}"))
    names.update(ep.name for ep in _entry_points())
    return sorted(names)


def _profile_candidates(name: str) -> Iterator[Path]:
    root = builtin_dir()
    yield root / name / PROFILE_FILE
    yield root / f"{name}.yaml"  # the flat layout of the first profiles
    for directory in _path_dirs():
        yield directory / name / PROFILE_FILE
    for ep in _entry_points():
        if ep.name == name:
            try:
                yield _entry_point_folder(ep)[0] / PROFILE_FILE
            except Exception:  # a broken package: list_drivers() reports it
                continue


class _TransportOnly(BaseModel):
    """The one field that decides which model a profile.yaml is."""

    model_config = ConfigDict(extra="allow")

    transport: Transport


def _profile_file(name_or_path: str | os.PathLike[str]) -> Path:
    """A profile.yaml by path (.yaml file or driver folder) or by name (see load_profile)."""
    text = os.fspath(name_or_path)
    if isinstance(name_or_path, os.PathLike) or text.endswith((".yaml", ".yml")) or "/" in text:
        path = Path(text)
        return path / PROFILE_FILE if path.is_dir() else path
    found = profile_path(text)
    if found is None:
        names = ", ".join(profile_names()) or "none"
        raise ConfigError(
            text, [ConfigProblem(None, None, "", f"unknown device profile; available: {names}")]
        )
    return found


def driver_transport(name_or_path: str | os.PathLike[str]) -> str:
    """The transport a profile declares ("modbus-tcp", "coap", ...); ConfigError (file:line)
    if the profile cannot be found or names no known transport."""
    return load_yaml_model(_profile_file(name_or_path), _TransportOnly).transport


def load_source_profile(name_or_path: str | os.PathLike[str]) -> SourceProfile:
    """Any driver's profile, as the model of its transport: DeviceProfile for Modbus,
    CoapProfile, SerialLineProfile or BleProfile. By name (driver folders, flat legacy
    files, SENTRYLINE_DRIVER_PATH, packages) or by path (.yaml file or driver folder).
    Every error is a ConfigError pointing at file:line field."""
    path = _profile_file(name_or_path)
    transport = load_yaml_model(path, _TransportOnly).transport
    return load_yaml_model(path, PROFILE_MODELS[transport])


def scan_drivers() -> tuple[list[DriverInfo], list[ConfigError]]:
    drivers: list[DriverInfo] = []
    problems: list[ConfigError] = []
    for load in _candidates():
        try:
            drivers.append(load())
        except ConfigError as exc:
            problems.append(exc)
    seen: dict[str, DriverInfo] = {}
    unique: list[DriverInfo] = []
    for driver in drivers:
        first = seen.get(driver.name)
        if first is None:
            seen[driver.name] = driver
            unique.append(driver)
            continue
        problems.append(
            _problem(
                driver.manifest_path,
                "name",
                f"driver {driver.name!r} is already registered from {first.folder} "
                f"({first.source}); rename one of them",
            )
        )
    return sorted(unique, key=lambda d: d.name), problems


def _candidates() -> Iterator[Callable[[], DriverInfo]]:
    root = builtin_dir()
    if root.is_dir():
        for folder in _driver_folders(root):
            yield functools.partial(load_driver, folder, "built-in")
    for directory in _path_dirs():
        for folder in _driver_folders(directory):
            yield functools.partial(load_driver, folder, "path")
    for ep in _entry_points():
        yield functools.partial(_load_entry_point, ep)


def _driver_folders(directory: Path) -> list[Path]:
    # '.'/'_' folders are tooling (__pycache__, .pytest_cache), not drivers.
    return sorted(
        p for p in directory.iterdir() if p.is_dir() and not p.name.startswith((".", "_"))
    )


def _path_dirs() -> list[Path]:
    value = os.environ.get(DRIVER_PATH_ENV, "")
    return [Path(part) for part in value.split(os.pathsep) if part and Path(part).is_dir()]


def _entry_points() -> list[EntryPoint]:
    return sorted(entry_points(group=ENTRY_POINT_GROUP), key=lambda ep: ep.name)


def _load_entry_point(ep: EntryPoint) -> DriverInfo:
    where = f"entry point {ep.name} = {ep.value} ({ENTRY_POINT_GROUP})"
    try:
        folder, module = _entry_point_folder(ep)
    except Exception as exc:  # an ImportError or anything the package raises on import
        raise ConfigError(where, [ConfigProblem(None, None, "", f"cannot load: {exc!r}")]) from exc
    dist = getattr(ep, "dist", None)
    package = dist.name if dist is not None else None
    return load_driver(folder, "package", name=ep.name, package=package, module=module)


def _entry_point_folder(ep: EntryPoint) -> tuple[Path, str | None]:
    """(driver folder, importable package name or None) of an entry point."""
    obj = ep.load()
    if isinstance(obj, ModuleType):
        file = getattr(obj, "__file__", None)
        folder = Path(file).parent if file else Path(next(iter(obj.__path__)))
        return folder, obj.__name__ if hasattr(obj, "__path__") else None
    if callable(obj):
        obj = obj()
    if isinstance(obj, str | os.PathLike):
        return Path(obj), None
    raise TypeError(f"{ep.value} is neither a package, a path nor a callable returning one")


# --- errors that point at a line ------------------------------------------------------------


def _require_values(path: Path, expected: Mapping[str, str], reason: str) -> None:
    """Raise a ConfigError at the line of each top-level field of `path` not as expected."""

    def check(want: str, value: Any) -> Any:
        if value != want:
            # No context is passed, so braces in the message are not template fields.
            raise PydanticCustomError("disagreement", f"must be {want!r} ({reason})")
        return value

    fields: dict[str, Any] = {
        key: (Annotated[Any, AfterValidator(functools.partial(check, want))], ...)
        for key, want in expected.items()
    }
    model = create_model("Agreement", __config__=ConfigDict(extra="allow"), **fields)
    load_yaml_model(path, model)


def _problem(path: Path, field: str, message: str) -> ConfigError:
    return ConfigError(str(path), [ConfigProblem(None, None, field, message)])


def _names_driver(problem: ConfigError, name: str) -> bool:
    source = Path(problem.source)
    return name in source.parts or f" {name} = " in problem.source
