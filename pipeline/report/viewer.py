"""The report's two scripted pages: the slice viewer of each subject page and the blinded reader study
(`reports/reader.html`), from what evaluation wrote (summary.json's `figures.viewer` and `figures.reader`).

Each page's one script is inline, and its Content-Security-Policy allows exactly that script by its SHA-256
(`script-src 'sha256-...'`): nothing else runs, nothing loads from anywhere but the report folder, and the pages
work from disk (file://). The reader page shows no output name, subject or slice: pair ids and neutral image
names only (the key stays in evaluation's folder).
"""

from __future__ import annotations

import base64
import hashlib
import re
from pathlib import Path
from typing import Any

from pipeline.io.atomic import atomic_path

SCRIPTS = Path(__file__).parent / "templates"


def script(name: str) -> dict[str, Any]:
    """The packaged script `name` (viewer.js, reader.js) for a page: {"text", "csp": its CSP source expression}."""
    from markupsafe import Markup

    text = (SCRIPTS / name).read_text()
    if re.search(r"</script", text, re.IGNORECASE):
        raise ValueError(f"{name}: a script to inline must not hold '</script'")
    digest = base64.b64encode(hashlib.sha256(text.encode()).digest()).decode()
    return {"text": Markup(text), "csp": f"'sha256-{digest}'"}


def _copy_once(src: str, assets: Path, rel: str, copied: dict[str, str]) -> str:
    """Copy a file evaluation wrote to `<assets>/<rel>`; returns its path relative to reports/ (each source
    copied once)."""
    import shutil

    if src not in copied:
        path = Path(src)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: image listed in summary.json not found")
        with atomic_path(assets / rel) as tmp:
            shutil.copyfile(path, tmp)
        copied[src] = f"assets/{rel}"
    return copied[src]


def _below_figures(src: str) -> str:
    """A sprite's path from its subject's folder on (`<figures>/sub-001/slices/sr/truth_axial.png` ->
    `sub-001/slices/sr/truth_axial.png`), as evaluation lays them out."""
    parts = Path(src).parts
    if "slices" not in parts[1:-1]:
        raise ValueError(f"{src}: not a slice viewer sprite of evaluation's layout (<subject>/slices/...)")
    return Path(*parts[parts.index("slices", 1) - 1:]).as_posix()


def viewers(summary: dict[str, Any], subject: str, assets: Path, root: str = "") -> dict[str, dict[str, Any]]:
    """{output: viewer entry with sprite paths relative to the page (`root`: the page's way to reports/)} of one
    subject (copies the sprites into assets/subjects/<subject>/slices/, each once)."""
    copied: dict[str, str] = {}
    out: dict[str, dict[str, Any]] = {}
    for name, entry in summary["figures"].get("viewer", {}).get(subject, {}).items():
        panels = [{**p, "sprites": {plane: root + _copy_once(src, assets, f"subjects/{_below_figures(src)}", copied) for plane, src in p["sprites"].items()}}
                  for p in entry["panels"]]
        out[name] = {**entry, "panels": panels}
    return out


def reader_context(summary: dict[str, Any], assets: Path) -> dict[str, Any] | None:
    """The reader page's study id and pairs (image paths relative to reports/), or None without a study."""
    study = summary["figures"].get("reader")
    if not study:
        return None
    copied: dict[str, str] = {}
    pairs = []
    for n, p in enumerate(study["pairs"], start=1):
        scale = max(1.0, 300 / max(p["width"], p["height"] * p["aspect"]))
        pairs.append({"n": n, "id": p["id"], "left": _copy_once(p["left"], assets, f"reader/{Path(p['left']).name}", copied),
                      "right": _copy_once(p["right"], assets, f"reader/{Path(p['right']).name}", copied),
                      "width": round(p["width"] * scale), "height": round(p["height"] * p["aspect"] * scale)})
    return {"study": study["study"], "format": study["format"], "pairs": pairs}
