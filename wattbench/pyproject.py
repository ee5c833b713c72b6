"""`[tool.wattbench.<section>]` of the nearest pyproject.toml: the gate's thresholds, the accuracy budget, the
report's cost inputs. One reader, so every section is found and refused the same way."""

from __future__ import annotations

from pathlib import Path

from wattbench.errors import UsageError

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: the same parser as a package
    import tomli as tomllib


def find_pyproject(start: Path) -> Path | None:
    """The nearest pyproject.toml in `start` or its parents, as pytest finds its rootdir."""
    for folder in (start.resolve(), *start.resolve().parents):
        candidate = folder / "pyproject.toml"
        if candidate.is_file():
            return candidate
    return None


def tool_table(section: str, start: Path = Path("."), what: str | None = None) -> tuple[object | None, str]:
    """The `[tool.wattbench.<section>]` value (None where there is none) and where it is, for messages;
    an unreadable file is a UsageError naming `what` it was read for."""
    path = find_pyproject(Path(start))
    where = f"{path} [tool.wattbench.{section}]"
    if path is None:
        return None, where
    try:
        document = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise UsageError(f"{path}: cannot read {what or section + ' settings'}: {exc}") from None
    table = document
    for key in ("tool", "wattbench", section):
        table = table.get(key) if isinstance(table, dict) else None
    return table, where
