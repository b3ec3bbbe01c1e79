"""Where the package's data files live (card YAML, terminology), for wheel and source installs."""

from __future__ import annotations

import functools
from importlib import resources as _ilr
from pathlib import Path
from typing import Any

_PKG = Path(__file__).resolve().parent.parent


@functools.lru_cache(maxsize=8)
def data_path(name: str) -> Path:
    """Folder (or file) ``name`` shipped with the package.

    A wheel carries ``cards/`` inside the package (pyproject force-include); a source checkout or an
    editable install keeps it at the repository root, next to ``cds_service/``. ``data/`` is always inside.
    """
    try:
        candidate = _ilr.files("cds_service") / name
        if candidate.is_dir() or candidate.is_file():
            return Path(str(candidate))
    except (ModuleNotFoundError, TypeError):  # pragma: no cover - odd loaders
        pass
    fallback = _PKG.parent / name
    return fallback


def load_yaml_dir(name: str) -> dict[str, Any]:
    """Merge every ``*.yaml`` in ``data_path(name)`` into one dict (file order: sorted names)."""
    import yaml

    merged: dict[str, Any] = {}
    folder = data_path(name)
    for path in sorted(folder.glob("*.yaml")):
        with path.open(encoding="utf-8") as fh:
            # libyaml's safe loader when PyYAML has it: same documents, quicker start-up
            doc = yaml.load(fh, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader)) or {}
        if not isinstance(doc, dict):
            raise ValueError(f"{path}: top level must be a mapping")
        for key, value in doc.items():
            if key in merged and not key.startswith("_"):
                raise ValueError(f"{path}: duplicate key {key!r}")
            merged[key] = value
    return merged
