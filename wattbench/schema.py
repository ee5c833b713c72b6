"""The formats wattbench reads, stated as plain data, and the one validator every loader uses.

A loader reads its file, then hands the parsed value to `validate` with the format below; a
malformed file becomes a one-line `UsageError` naming the file and the field, e.g.

    run.json: benchmarks[3].extra_info.median_s: expected a number, got 'abc'

Versioned formats carry a `format` field, `NAME/MAJOR` or `NAME/MAJOR.MINOR`: a minor version
only adds optional fields (this wattbench reads it and ignores what it does not know), a newer
major version is refused by `check_format`. docs/formats.md describes every format in words.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from wattbench import record
from wattbench.errors import UsageError


class Problem(Exception):
    """What is wrong (`text`) and where (`path`: keys and list positions from the document's root)."""

    def __init__(self, path: tuple, text: str):
        super().__init__(text)
        self.path, self.text = path, text


def shown(value: Any) -> str:
    """A value as an error message quotes it: short, on one line."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return repr(value if len(value) <= 40 else value[:40] + "...")
    if isinstance(value, (int, float)):
        text = repr(value)
        return text if len(text) <= 40 else text[:40] + "..."
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list):
        return "a list"
    return f"a {type(value).__name__}"


def field_path(path: tuple) -> str:
    """('benchmarks', 3, 'extra_info') -> 'benchmarks[3].extra_info'; odd keys are quoted."""
    text = ""
    for part in path:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            name = part if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_-]*", part) else repr(part)
            text += f".{name}" if text else name
    return text


# --- the building blocks of a format ------------------------------------------------------------


@dataclass(frozen=True)
class Kind:
    """A leaf: the values `accepts` takes, called `what` in errors."""

    what: str
    accepts: Callable[[Any], bool]

    def takes(self, value) -> bool:
        return self.accepts(value)

    def check(self, value, path: tuple) -> None:
        if not self.accepts(value):
            raise Problem(path, f"expected {self.what}, got {shown(value)}")


@dataclass(frozen=True)
class Rule:
    """`base`, and a further test on the value (a range, a non-empty text); `what` names both."""

    base: Any
    test: Callable[[Any], bool]
    what: str

    def takes(self, value) -> bool:
        return self.base.takes(value)

    def check(self, value, path: tuple) -> None:
        self.base.check(value, path)
        if not self.test(value):
            raise Problem(path, f"expected {self.what}, got {shown(value)}")


@dataclass(frozen=True)
class AnyOf:
    """One of several shapes; a value is checked in full against the first shape it has."""

    options: tuple

    @property
    def what(self) -> str:
        return " or ".join(option.what for option in self.options)

    def takes(self, value) -> bool:
        return any(option.takes(value) for option in self.options)

    def check(self, value, path: tuple) -> None:
        for option in self.options:
            if option.takes(value):
                option.check(value, path)
                return
        raise Problem(path, f"expected {self.what}, got {shown(value)}")


@dataclass(frozen=True)
class ListOf:
    item: Any
    what: str = "a list"

    def takes(self, value) -> bool:
        return isinstance(value, list)

    def check(self, value, path: tuple) -> None:
        if not isinstance(value, list):
            raise Problem(path, f"expected {self.what}, got {shown(value)}")
        for position, item in enumerate(value):
            self.item.check(item, (*path, position))


@dataclass(frozen=True)
class MapOf:
    """An object whose keys are names chosen by the writer (among `keys`, when given)."""

    value: Any
    keys: tuple[str, ...] | None = None
    what: str = "an object"

    def takes(self, value) -> bool:
        return isinstance(value, dict)

    def check(self, value, path: tuple) -> None:
        if not isinstance(value, dict):
            raise Problem(path, f"expected {self.what}, got {shown(value)}")
        for key, item in value.items():
            if self.keys is not None and key not in self.keys:
                raise Problem(path, f"keys must be among {', '.join(self.keys)}, got {shown(key)}")
            self.value.check(item, (*path, key))


@dataclass(frozen=True)
class Obj:
    """An object with named fields. Keys not listed are allowed (newer writers add fields) unless `closed`.

    `together` maps a field to the fields that must also be given (not null) whenever it is.
    """

    required: dict = field(default_factory=dict)
    optional: dict = field(default_factory=dict)
    closed: bool = False
    together: dict = field(default_factory=dict)
    what: str = "an object"

    def takes(self, value) -> bool:
        return isinstance(value, dict)

    def check(self, value, path: tuple) -> None:
        if not isinstance(value, dict):
            raise Problem(path, f"expected {self.what}, got {shown(value)}")
        for name in self.required:
            if name not in value:
                raise Problem((*path, name), "required, but missing")
        if self.closed:
            unknown = [key for key in value if key not in self.required and key not in self.optional]
            if unknown:
                raise Problem(path, f"unknown key {shown(unknown[0])}: expected {self.what}")
        for name, node in {**self.required, **self.optional}.items():
            if name in value:
                node.check(value[name], (*path, name))
        for trigger, needed in self.together.items():
            if value.get(trigger) is not None:
                for name in needed:
                    if value.get(name) is None:
                        raise Problem((*path, name), f"required when {trigger} is given")


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def is_finite_number(value) -> bool:
    """A finite int or float; a bool is not a number here (True would pass as 1)."""
    return _is_number(value) and math.isfinite(value)


NULL = Kind("null", lambda value: value is None)
STRING = Kind("a string", lambda value: isinstance(value, str))
BOOL = Kind("true or false", lambda value: isinstance(value, bool))
NUMBER = Kind("a number", _is_number)
INTEGER = Kind("an integer", lambda value: isinstance(value, int) and not isinstance(value, bool))
OBJECT = Obj()
TEXT = Rule(STRING, lambda value: bool(value.strip()), "a non-empty string")
POSITIVE = Rule(NUMBER, lambda value: math.isfinite(value) and value > 0, "a positive number")


def nullable(node) -> AnyOf:
    return AnyOf((node, NULL))


# --- versions ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Format:
    """A versioned format: its name and the major version this wattbench reads."""

    name: str
    major: int

    @property
    def current(self) -> str:
        return f"{self.name}/{self.major}"


RUN_FORMAT = Format("wattbench-run", 1)
SPECS_FORMAT = Format("wattbench-device-specs", 1)


def check_format(value, expected: Format, source, path: tuple = ("format",)) -> None:
    """Accept `expected`'s major version (any minor); refuse another format or a newer major version."""
    found = re.fullmatch(r"(.+)/(\d+)(?:\.\d+)?", value) if isinstance(value, str) else None
    if found is None or found.group(1) != expected.name:
        raise UsageError(f"{source}: {field_path(path)}: expected {expected.current!r}, got {shown(value)}")
    major = int(found.group(2))
    if major > expected.major:
        raise UsageError(f"{source}: format {value} is newer than this wattbench understands "
                         f"({expected.current}): upgrade wattbench")
    if major < expected.major:
        raise UsageError(f"{source}: format {value} is older than any this wattbench reads ({expected.current})")


# --- reading -------------------------------------------------------------------------------------


def validate(value, node, source) -> None:
    """Check `value` against `node`; the first problem becomes a one-line UsageError naming `source` and the field."""
    try:
        node.check(value, ())
    except Problem as problem:
        where = field_path(problem.path)
        raise UsageError(f"{source}: {where}: {problem.text}" if where else f"{source}: {problem.text}") from None


def read_json(path: Path):
    """A JSON file's value, or a one-line UsageError naming the file and why it cannot be read."""
    try:
        raw = Path(path).read_bytes()
    except OSError as exc:
        raise UsageError(f"{path}: cannot read: {exc.strerror or exc}") from None
    try:
        return json.loads(raw)
    except json.JSONDecodeError as exc:
        raise UsageError(f"{path}: not valid JSON (line {exc.lineno}: {exc.msg})") from None
    except UnicodeDecodeError:
        raise UsageError(f"{path}: not valid JSON (not UTF-8 text)") from None
    except RecursionError:
        raise UsageError(f"{path}: not valid JSON (nested too deeply)") from None


# --- run files (and baselines, which are run files) ----------------------------------------------

_STRING_OR_NULL = nullable(STRING)
_NUMBER_OR_NULL = nullable(NUMBER)

ADAPTIVE = Obj(optional={
    "stopped": STRING, "lengths_s": ListOf(NUMBER), "update_period_measured": BOOL, "max_windows": INTEGER,
    **{name: _NUMBER_OR_NULL for name in (
        "target_pct", "reached_pct", "spread_pct", "edge_pct", "floor_s", "min_window_s", "max_window_s",
        "update_period_s", "poll_s")}})

TIMING = Obj(optional={"method": STRING, "rounds": INTEGER, "warmup_rounds": INTEGER, "flush_l2": BOOL,
                       "samples_s": ListOf(NUMBER), "graph_note": STRING, "planning_call_s": NUMBER,
                       "disagreements": ListOf(STRING)})

#: The JSON value of each field kind wattbench.record declares.
_KINDS = {"string": STRING, "string?": _STRING_OR_NULL, "number": NUMBER, "number?": _NUMBER_OR_NULL, "bool": BOOL,
          "integer": INTEGER, "object": OBJECT, "timing": TIMING, "spans": ListOf(ListOf(NUMBER)),
          "number?[]": ListOf(_NUMBER_OR_NULL), "adaptive": ADAPTIVE}


def _fields(record_type, kinds: dict) -> dict:
    return {name: kinds[kind] for name, kind in record.kinds(record_type).items()}


#: A record's energy block (record.EnergyRecord).
ENERGY = Obj(optional=_fields(record.EnergyRecord, _KINDS), together=record.EnergyRecord.TOGETHER)

#: What names a benchmark across runs (with the device, and its setting where a sweep gives one); a record gives
#: all of them or none.
IDENTITY = record.STATED_CASE_FIELDS

#: wattbench's fields of one record (record.Record). None is required: pytest-benchmark's own records have none.
EXTRA_INFO = Obj(together={name: IDENTITY for name in IDENTITY},
                 optional=_fields(record.Record, {**_KINDS, "energy?": nullable(ENERGY)}))

#: pytest-benchmark's statistics of one record (the ones wattbench reads).
STATS = Obj(optional={
    **{name: _NUMBER_OR_NULL for name in ("min", "max", "mean", "stddev", "median", "q1", "q3", "iqr", "ops",
                                          "total")},
    "rounds": INTEGER, "iterations": INTEGER, "data": ListOf(NUMBER),
})

RECORD = Obj(required={"extra_info": EXTRA_INFO},
             optional={"name": STRING, "group": _STRING_OR_NULL, "fullname": STRING, "params": nullable(OBJECT),
                       "param": _STRING_OR_NULL, "options": OBJECT, "stats": nullable(STATS)})

BASELINE = Obj(required={"name": STRING}, optional={"saved_utc": STRING, "source": STRING, "commit": OBJECT,
                                                    "complete": nullable(BOOL)})

RUN_BLOCK = Obj(optional={
    "format": STRING, "preset": STRING, "device": STRING, "device_name": _STRING_OR_NULL, "seed": INTEGER,
    "select": _STRING_OR_NULL, "timing_plan": OBJECT, "started_utc": _STRING_OR_NULL, "ended_utc": _STRING_OR_NULL,
    "complete": BOOL,
    "failed": ListOf(Obj(required={"case": _STRING_OR_NULL, "error": STRING}, optional={"phase": STRING})),
    "skipped": ListOf(Obj(required={"case": _STRING_OR_NULL, "reason": STRING})),
    "power": OBJECT, "summary": OBJECT, "baseline": BASELINE,
    "planned": ListOf(STRING),
    "segments": ListOf(Obj(required={"end": STRING},
                           optional={"started_utc": _STRING_OR_NULL, "ended_utc": _STRING_OR_NULL,
                                     "signal": _STRING_OR_NULL})),
    "threads": nullable(OBJECT), "load_average": OBJECT,
})

_COMMIT = Obj(optional={"id": _STRING_OR_NULL, "dirty": nullable(BOOL)})

#: The environment block (machine_info.wattbench): only the facts readers rely on are typed here.
ENVIRONMENT = Obj(optional={
    "wattbench_version": _STRING_OR_NULL, "wattbench_commit": _COMMIT, "host": _STRING_OR_NULL,
    "device": Obj(optional={"name": _STRING_OR_NULL}), "triton_interpreted": nullable(BOOL),
    "nvidia_driver": AnyOf((STRING, OBJECT, NULL)),
})

RUN_FILE = Obj(
    required={"benchmarks": ListOf(RECORD), "wattbench": RUN_BLOCK},
    optional={"machine_info": Obj(optional={"node": _STRING_OR_NULL, "wattbench": ENVIRONMENT}),
              "commit_info": _COMMIT, "datetime": _STRING_OR_NULL, "version": STRING},
)


def check_run(data, source) -> None:
    """A wattbench run file: pytest-benchmark's JSON with wattbench's block, format 1 (any minor)."""
    if not isinstance(data, dict) or not isinstance(data.get("benchmarks"), list):
        raise UsageError(f"{source}: not a run file: no 'benchmarks' list")
    if not isinstance(data.get("wattbench"), dict):
        raise UsageError(f"{source}: not a wattbench run file: no 'wattbench' block (pytest-benchmark's JSON "
                         f"alone; write run files with `wattbench run` or pytest's wattbench plugin)")
    for position, bench in enumerate(data["benchmarks"]):
        if not isinstance(bench, dict) or not isinstance(bench.get("extra_info"), dict):
            raise UsageError(f"{source}: benchmarks[{position}] has no 'extra_info' object")
    # Files written before the block carried a format field are format 1.
    check_format(data["wattbench"].get("format", RUN_FORMAT.current), RUN_FORMAT, source, ("wattbench", "format"))
    validate(data, RUN_FILE, source)


# --- the device spec table ------------------------------------------------------------------------

SPEC_PRECISIONS = ("fp32", "tf32", "bf16", "fp16", "fp8", "int8")
SPEC_FIGURES = ("memory_bandwidth_gbps", "memory_gb", "tdp_w")

#: Every figure names where it came from: a number nobody can check is rejected.
FIGURE = Obj(required={"value": POSITIVE, "source": TEXT}, what='{"value": number, "source": text}')

SPEC_DEVICE = Obj(
    required={"name": TEXT},
    optional={"kind": STRING, "match": ListOf(STRING), "peak_tflops": MapOf(FIGURE, SPEC_PRECISIONS),
              **{name: nullable(FIGURE) for name in SPEC_FIGURES}, "notes": ListOf(STRING)},
)

SPEC_TABLE = Obj(required={"format": STRING, "devices": ListOf(SPEC_DEVICE)})


def check_specs(data, source) -> None:
    if not isinstance(data, dict):
        raise UsageError(f"{source}: not a device spec file: expected an object with format "
                         f"{SPECS_FORMAT.current!r}, got {shown(data)}")
    check_format(data.get("format"), SPECS_FORMAT, source)
    validate(data, SPEC_TABLE, source)


# --- gate settings ([tool.wattbench.gate] in pyproject.toml) ------------------------------------

GATE_METRICS = ("time", "energy")
#: A threshold: '5%' or 0.05 (its range is checked when it is parsed, by gate.config.parse_fraction).
THRESHOLD = AnyOf((Kind("a percentage like '5%'", lambda value: isinstance(value, str)),
                   Kind("a fraction like 0.05", _is_number)))

PATTERN_THRESHOLDS = Rule(
    Obj(optional={metric: THRESHOLD for metric in GATE_METRICS}, closed=True,
        what=f"a table of thresholds with keys from {', '.join(GATE_METRICS)}"),
    bool, f"a table of thresholds with keys from {', '.join(GATE_METRICS)}")

_GATE_OPTIONAL = {
    **{metric: THRESHOLD for metric in GATE_METRICS},
    "drift": THRESHOLD,
    "confidence": Rule(NUMBER, lambda value: 0.5 <= value < 1, "a number in [0.5, 1)"),
    "resamples": Rule(INTEGER, lambda value: value >= 100, "an integer >= 100"),
    "seed": Rule(INTEGER, lambda value: value >= 0, "an integer >= 0"),
    "patterns": MapOf(PATTERN_THRESHOLDS, what="a table of tables"),
}
GATE_SETTINGS = Obj(optional=_GATE_OPTIONAL, closed=True,
                    what=f"a table with keys from {', '.join(sorted(_GATE_OPTIONAL))}")


# --- replay power logs (CSV from an external meter) ----------------------------------------------

#: Columns a replay log must name in its header (any order, any case; other columns are ignored).
REPLAY_COLUMNS = ("timestamp", "watts")
