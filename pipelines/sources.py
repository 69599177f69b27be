"""The data files an ``input.path`` names: one file, a folder of files, or a glob pattern.

A folder's data files are the files under it, at any depth, except those with a name part that
starts with ``.`` or ``_`` (hidden files, ``_SUCCESS`` markers). A pattern (``*``, ``?``, ``[``;
``**`` crosses folders) names the files it matches. Files are read in the order of their paths,
sorted by code point, so a record's number is the same on every run over the same files.
"""

from __future__ import annotations

import glob
from pathlib import Path

# file suffix -> input format
SUFFIX_FORMATS: dict[str, str] = {
    "jsonl": "jsonl", "ndjson": "jsonl", "parquet": "parquet", "pq": "parquet", "csv": "csv", "tsv": "csv",
}
_PATTERN_CHARS = frozenset("*?[")
_IGNORED_PREFIXES = (".", "_")


def names_data(path: Path) -> bool:
    """True when ``path`` is a file, a folder, or a pattern that matches at least one file."""
    return path.is_file() or path.is_dir() or (_is_pattern(path) and bool(_matches(path)))


def data_files(path: str | Path) -> list[Path]:
    """The files ``path`` names, in reading order; ValueError when it names none."""
    path = Path(path)
    if path.is_file():
        return [path]
    if path.is_dir():
        files = sorted(
            (file for file in path.rglob("*") if file.is_file() and not _ignored(file.relative_to(path))),
            key=lambda file: file.relative_to(path).as_posix(),
        )
        if not files:
            raise ValueError(f"'input.path' folder {str(path)!r} holds no data files")
        return files
    files = _matches(path) if _is_pattern(path) else []
    if not files:
        raise ValueError(f"'input.path' {str(path)!r} names no file, folder or matching files")
    return files


def infer_format(path: str) -> str:
    """The format of the files ``path`` names, from their suffixes; ValueError naming the file
    when a suffix is unknown or the files mix formats."""
    files = data_files(path) if _is_pattern(Path(path)) or Path(path).is_dir() else [Path(path)]
    formats: dict[str, Path] = {}
    for file in files:
        fmt = suffix_format(file)
        if fmt is None:
            raise ValueError(f"cannot infer 'input.format' from {file.name!r}; "
                             f"set it to one of {', '.join(dict.fromkeys(SUFFIX_FORMATS.values()))}")
        formats.setdefault(fmt, file)
    if len(formats) > 1:
        named = ", ".join(f"{fmt} ({file.name})" for fmt, file in sorted(formats.items()))
        raise ValueError(f"'input.path' {path!r} holds files of several formats: {named}; "
                         "give one kind of file, or set 'input.format' to read them all as one")
    return next(iter(formats))


def suffix_format(path: Path) -> str | None:
    """The format named by the last suffix of ``path`` that names one, or None."""
    for suffix in reversed(path.suffixes):
        fmt = SUFFIX_FORMATS.get(suffix.lstrip(".").lower())
        if fmt is not None:
            return fmt
    return None


def _is_pattern(path: Path) -> bool:
    return any(char in _PATTERN_CHARS for char in str(path))


def _matches(pattern: Path) -> list[Path]:
    return sorted((Path(name) for name in glob.glob(str(pattern), recursive=True) if Path(name).is_file()), key=str)


def _ignored(relative: Path) -> bool:
    return any(part.startswith(_IGNORED_PREFIXES) for part in relative.parts)
