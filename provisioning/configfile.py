"""Load YAML files into pydantic models with errors a field engineer can act on.

Every problem names the file, the 1-based line and column, and the field path
(``devices[0].poll_interval``).  We compose the YAML node tree first (SafeLoader
only) so that positions survive, then construct plain data and validate it.
"""

from __future__ import annotations

import datetime
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, RootModel, ValidationError
from pydantic_core import ErrorDetails
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

__all__ = ["ConfigError", "ConfigProblem", "load_yaml_model", "parse_yaml_model"]

M = TypeVar("M", bound=BaseModel)

_Path = tuple[Any, ...]
_Pos = tuple[int, int]
_MERGE_TAG = "tag:yaml.org,2002:merge"
_MAX_INPUT_REPR = 60


@dataclass(frozen=True, slots=True)
class ConfigProblem:
    line: int | None  # 1-based
    column: int | None  # 1-based
    field: str  # "devices[0].poll_interval"; "" for the whole document
    message: str


class ConfigError(Exception):
    """One or more problems in one configuration source; str() is one line per problem."""

    def __init__(self, source: str, problems: list[ConfigProblem]) -> None:
        # Passing both to Exception keeps the error picklable (cls(*args) round-trips).
        super().__init__(source, problems)
        self.source = source
        # Stable sort: problems without a line go last, same-line problems keep their order.
        self.problems = sorted(
            problems,
            key=lambda p: (p.line is None, p.line or 0, p.column or 0),
        )

    def __str__(self) -> str:
        return "\n".join(self._format(p) for p in self.problems)

    def _format(self, p: ConfigProblem) -> str:
        where = self.source
        if p.line is not None:
            where += f":{p.line}"
            if p.column is not None:
                where += f":{p.column}"
        # Keep one problem per output line even if a YAML message carries newlines.
        message = " ".join(p.message.split())
        return f"{where}: {p.field}: {message}" if p.field else f"{where}: {message}"


def load_yaml_model(path: str | os.PathLike[str], model: type[M]) -> M:
    """Read ``path`` (UTF-8) and validate it as ``model``; every failure is a ConfigError."""
    source = os.fspath(path)
    try:
        with open(source, "rb") as fh:
            raw = fh.read()
    except FileNotFoundError:
        raise _single(source, "file not found") from None
    except IsADirectoryError:
        raise _single(source, "is a directory, not a file") from None
    except OSError as exc:
        raise _single(source, f"cannot read file: {exc.strerror or exc}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        column = exc.start - (raw.rfind(b"\n", 0, exc.start) + 1) + 1
        problem = ConfigProblem(line, column, "", f"file is not valid UTF-8 (byte {exc.start})")
        raise ConfigError(source, [problem]) from None
    return parse_yaml_model(text, model, source)


def parse_yaml_model(text: str, model: type[M], source: str = "<string>") -> M:
    """Parse YAML ``text`` and validate it as ``model``; every failure is a ConfigError."""
    data, positions = _compose(text, source)
    # RootModel subclasses may legitimately take a list or scalar; plain models never do,
    # and pydantic's "valid dictionary" wording does not tell a field engineer much.
    if not issubclass(model, RootModel):
        if data is None:
            raise _single(source, "file is empty")
        if not isinstance(data, dict):
            line, column = positions.values[()]
            kind = "a list" if isinstance(data, list) else f"a single value ({_short(data)})"
            problem = ConfigProblem(
                line, column, "", f"top level must be a mapping of 'key: value' pairs, not {kind}"
            )
            raise ConfigError(source, [problem])

    try:
        return model.model_validate(data)
    except ValidationError as exc:
        problems = [_validation_problem(err, data, positions) for err in exc.errors()]
        raise ConfigError(source, problems) from None


def _compose(text: str, source: str) -> tuple[Any, _Positions]:
    """Compose the node tree (positions, duplicate keys), then construct plain data."""
    try:
        loader = yaml.SafeLoader(text)  # the Reader already rejects control characters here
        try:
            node = loader.get_single_node()
            if node is None:
                raise _single(source, "file is empty")
            positions = _Positions(loader)
            positions.walk(node, (), set())
            if positions.duplicates:
                raise ConfigError(source, positions.duplicates)
            return loader.construct_document(node), positions
        finally:
            loader.dispose()
    except yaml.MarkedYAMLError as exc:
        raise ConfigError(source, [_yaml_problem(exc)]) from None
    except yaml.YAMLError as exc:
        raise ConfigError(source, [_reader_problem(exc, text)]) from None


class _Positions:
    """Line/column of every value and mapping key, keyed by path tuple, plus duplicate keys."""

    def __init__(self, loader: yaml.SafeLoader) -> None:
        self.loader = loader
        self.values: dict[_Path, _Pos] = {}
        self.keys: dict[_Path, _Pos] = {}
        self.duplicates: list[ConfigProblem] = []
        self._checked: set[int] = set()  # mappings already checked (aliases revisit them)

    def walk(self, node: Node, path: _Path, stack: set[int]) -> None:
        # setdefault: explicit keys are walked before merge keys ('<<') and win, as in YAML.
        self.values.setdefault(path, _pos(node))
        if id(node) in stack:  # recursive alias (&a [*a]); the constructor handles it
            return
        stack.add(id(node))
        if isinstance(node, SequenceNode):
            for index, item in enumerate(node.value):
                self.walk(item, (*path, index), stack)
        elif isinstance(node, MappingNode):
            self._walk_mapping(node, path, stack)
        stack.discard(id(node))

    def _walk_mapping(self, node: MappingNode, path: _Path, stack: set[int]) -> None:
        check = id(node) not in self._checked
        self._checked.add(id(node))
        first: dict[Any, Node] = {}
        merges: list[Node] = []
        for key_node, value_node in node.value:
            if key_node.tag == _MERGE_TAG:
                merges.append(value_node)
                continue
            if not isinstance(key_node, ScalarNode):
                continue  # the constructor rejects unhashable keys with its own marked error
            # Compare constructed keys: `1`/`0x1` or `yes`/`true` collapse in the dict too.
            key = self.loader.construct_object(key_node)
            if key in first:
                if check:
                    line, column = _pos(key_node)
                    first_line = _pos(first[key])[0]
                    self.duplicates.append(
                        ConfigProblem(
                            line,
                            column,
                            _format_path((*path, key)),
                            f"duplicate key {key!r} (first defined on line {first_line})",
                        )
                    )
                continue  # positions of the first definition stay; the rest is an error anyway
            first[key] = key_node
            self.keys.setdefault((*path, key), _pos(key_node))
            self.walk(value_node, (*path, key), stack)
        # Merged entries point at where the anchored mapping defines them.
        for merge in merges:
            for sub in merge.value if isinstance(merge, SequenceNode) else [merge]:
                if isinstance(sub, MappingNode):
                    self.walk(sub, path, stack)


def _pos(node: Node) -> _Pos:
    return node.start_mark.line + 1, node.start_mark.column + 1


def _single(source: str, message: str) -> ConfigError:
    return ConfigError(source, [ConfigProblem(None, None, "", message)])


def _yaml_problem(exc: yaml.MarkedYAMLError) -> ConfigProblem:
    mark = exc.problem_mark or exc.context_mark
    message = exc.problem or exc.context or "invalid YAML"
    if exc.problem and exc.context:
        # PyYAML's own order: "while scanning a simple key on line 3: could not find ':'".
        context = exc.context
        if exc.context_mark is not None:
            context += f" on line {exc.context_mark.line + 1}"
        message = f"{context}: {exc.problem}"
    if mark is None:
        return ConfigProblem(None, None, "", message)
    return ConfigProblem(mark.line + 1, mark.column + 1, "", message)


def _reader_problem(exc: yaml.YAMLError, text: str) -> ConfigProblem:
    # ReaderError (e.g. control characters) carries a character offset, not a mark.
    position = getattr(exc, "position", None)
    reason = getattr(exc, "reason", None)
    character = getattr(exc, "character", None)
    message = str(exc).splitlines()[0]
    if reason and isinstance(character, int):
        message = f"unacceptable character #x{character:04x}: {reason}"
    if not isinstance(position, int):
        return ConfigProblem(None, None, "", message)
    line = text.count("\n", 0, position) + 1
    column = position - (text.rfind("\n", 0, position) + 1) + 1
    return ConfigProblem(line, column, "", message)


def _validation_problem(err: ErrorDetails, data: Any, positions: _Positions) -> ConfigProblem:
    loc = err["loc"]
    kind = err["type"]
    path: list[Any] = []
    obj = data
    key_error = matched = False
    # Follow loc through the data; loc elements absent from it are pydantic's own
    # (union tags, 'function-after[...]', model names) and are skipped.
    for elem in loc:
        matched = True
        if elem == "[key]" and path:
            key_error = True
        elif _contains(obj, elem):
            path.append(elem)
            obj = obj[elem]
        else:
            matched = False
    found = tuple(path)
    field_path = found
    # A missing field is by definition not in the data, but it is the field to report.
    if kind == "missing" and loc and not matched and isinstance(loc[-1], str):
        field_path = (*found, loc[-1])

    # Missing field: point at the key that introduced the parent mapping (or the list item).
    # Extra or bad key: point at the key itself.  Otherwise: the value.
    prefer_key = key_error or kind == "extra_forbidden" or kind == "missing"
    line, column = _locate(found, positions, prefer_key)

    message = err["msg"]
    value = err.get("input")
    if kind != "missing" and _is_scalar(value):
        message += f" (got {_short(value)})"
    return ConfigProblem(line, column, _format_path(field_path), message)


def _contains(obj: object, elem: Any) -> bool:
    if isinstance(obj, list):
        return isinstance(elem, int) and 0 <= elem < len(obj)
    if isinstance(obj, Mapping):
        try:
            return elem in obj
        except TypeError:  # unhashable loc element
            return False
    return False


def _locate(path: _Path, positions: _Positions, prefer_key: bool) -> _Pos | tuple[None, None]:
    if prefer_key and path and path in positions.keys:
        return positions.keys[path]
    for end in range(len(path), -1, -1):
        pos = positions.values.get(path[:end])
        if pos is not None:
            return pos
    return None, None


def _format_path(path: _Path) -> str:
    out = ""
    for elem in path:
        if isinstance(elem, int) and not isinstance(elem, bool):
            out += f"[{elem}]"
        else:
            out += f".{elem}" if out else str(elem)
    return out


def _is_scalar(value: object) -> bool:
    return value is None or isinstance(
        value, str | bytes | int | float | bool | datetime.date | datetime.time
    )


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= _MAX_INPUT_REPR else text[: _MAX_INPUT_REPR - 3] + "..."
