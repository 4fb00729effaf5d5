"""Board profiles: every shipped one validates; mistakes are reported at file:line: field."""

from __future__ import annotations

import pytest

from edge_models.boards import BoardProfile, boards_dir, load_board
from provisioning.configfile import ConfigError, parse_yaml_model

REQUIRED = {"rpi4", "jetson-orin-nano", "imx8mp", "coral-edgetpu", "x86"}


def test_shipped_boards_validate_and_cover_the_required_targets():
    names = {p.stem for p in boards_dir().glob("*.yaml")}
    assert names >= REQUIRED
    for name in names:
        board = load_board(name)
        assert board.name == name
    assert load_board("imx8mp").inference.accelerators[0].library == "/usr/lib/libvx_delegate.so"
    coral = load_board("coral-edgetpu").inference.accelerators[0]
    assert (coral.kind, coral.library, coral.model_suffix) == (
        "edgetpu",
        "libedgetpu.so.1",
        "_edgetpu",
    )
    jetson = load_board("jetson-orin-nano").inference
    assert jetson.runtime == "onnx"
    assert [p.name for p in jetson.onnx_providers][:2] == [
        "TensorrtExecutionProvider",
        "CUDAExecutionProvider",
    ]
    assert load_board("rpi4").inference.accelerators == []


GOOD = """\
name: test-board
arch: aarch64
cpu_cores: 4
memory_mb: 1024
inference:
  runtime: litert
  threads: 2
  accelerators:
    - kind: vx
"""


def _problems(text: str) -> list[tuple[int | None, str, str]]:
    with pytest.raises(ConfigError) as err:
        parse_yaml_model(text, BoardProfile, "board.yaml")
    return [(p.line, p.field, p.message) for p in err.value.problems]


def test_defaults_fill_in_the_library_for_known_delegates():
    board = parse_yaml_model(GOOD, BoardProfile, "board.yaml")
    assert board.inference.accelerators[0].library == "libvx_delegate.so"


@pytest.mark.parametrize(
    ("old", "new", "line", "field", "words"),
    [
        ("  threads: 2", "  threads: 8", 7, "inference.threads", "8 threads on a 4-core"),
        ("    - kind: vx", "    - kind: npu", 9, "inference.accelerators[0].kind", "'gpu'"),
        ("    - kind: vx", "    - kind: external", 9, "inference.accelerators[0]", "library"),
        ("memory_mb: 1024", "memory_mb: lots", 4, "memory_mb", "integer"),
        ("  runtime: litert", "  runtime: onnx", 9, "inference.accelerators", "runtime: litert"),
        ("arch: aarch64", "arch: aarch64\ncolour: red", 3, "colour", "Extra inputs"),
    ],
)
def test_mistakes_are_reported_with_their_line(old, new, line, field, words):
    problems = _problems(GOOD.replace(old, new))
    assert len(problems) == 1, problems
    got_line, got_field, message = problems[0]
    assert (got_line, got_field) == (line, field)
    assert words in message


def test_unknown_board_name_lists_the_known_ones():
    with pytest.raises(ConfigError) as err:
        load_board("nope")
    assert "rpi4" in str(err.value)
