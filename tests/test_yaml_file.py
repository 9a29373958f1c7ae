"""User YAML files (study configs, bench tasks, loop configs): one line naming the file, the line and the reason."""

from __future__ import annotations

import pytest

from rmtension.bench.task import load_task
from rmtension.config import load_config
from rmtension.errors import ConfigError
from rmtension.loop.config import load_loop_config
from rmtension.yaml_file import read_mapping


def test_read_mapping_names_file_line_and_reason(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("a: 1\nb: [1, 2\nc: 3\n")  # the flow sequence opened on line 2 is never closed
    with pytest.raises(ConfigError) as err:
        read_mapping(bad, "thing", "not a mapping")
    line = str(err.value)
    assert line.startswith(f"{bad}:") and "invalid YAML" in line and "\n" not in line
    reported = int(line[len(str(bad)) + 1 :].split(":")[0])
    assert 2 <= reported <= 4  # where PyYAML notices the unclosed sequence

    listing = tmp_path / "list.yaml"
    listing.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match=r"list\.yaml: not a mapping$"):
        read_mapping(listing, "thing", "not a mapping")

    empty = tmp_path / "empty.yaml"
    empty.write_text("")
    assert read_mapping(empty, "thing", "x", empty_ok=True) == {}
    with pytest.raises(ConfigError, match=r"empty\.yaml: x$"):
        read_mapping(empty, "thing", "x")
    with pytest.raises(ConfigError, match=r"missing\.yaml: cannot read thing \("):
        read_mapping(tmp_path / "missing.yaml", "thing", "x")


@pytest.mark.parametrize(
    "load, what",
    [(load_config, "config"), (load_task, "task"), (load_loop_config, "the loop config")],
)
def test_each_reader_says_what_it_could_not_read(tmp_path, load, what):
    with pytest.raises(ConfigError, match=rf"nope\.yaml: cannot read {what} \("):
        load(tmp_path / "nope.yaml")
    listing = tmp_path / "list.yaml"
    listing.write_text("- 1\n")
    with pytest.raises(ConfigError, match=r"list\.yaml: .*mapping"):
        load(listing)
