"""An HTML gallery of ``gpuface faces``' result (``faces/index.html``): what video-to-faces' notebook helpers
``image_gallery`` (thumbnails per sub-folder) and ``dataframe_with_images`` (log rows with their pictures) show,
as one static page that any browser opens from disk.

One section per group (``0 … K-1``, reference people, ``other``; ``faces`` when nothing was grouped), then the
rejected and duplicate crops that were saved (``--save-rejects``, ``--save-dupes``); each thumbnail links to its
crop and is captioned with its file name, source, frame number and time. Images are referenced by relative
path (the page moves with its folder). When the page has loaded, a line under the title says how many images
could not be shown (a crop deleted or moved since), and ``<body data-images data-broken>`` carries both counts.
"""
from __future__ import annotations

import html
import os
from pathlib import Path

_STYLE = """body{font-family:sans-serif;margin:1em}section{margin-bottom:1.5em}
.grid{display:flex;flex-flow:row wrap}figure{margin:4px;text-align:center}
img{height:120px;display:block;margin:auto}figcaption{font-size:.75em;max-width:160px;overflow-wrap:anywhere}"""
_CHECK = """window.addEventListener("load", function () {
  var imgs = document.images, broken = 0;
  for (var i = 0; i < imgs.length; i++) if (!imgs[i].complete || imgs[i].naturalWidth === 0) broken++;
  document.body.dataset.images = imgs.length; document.body.dataset.broken = broken;
  document.getElementById("status").textContent = imgs.length + " images, " + broken + " not found";
});"""


def _sections(table):
    saved = table[table["file"].notna()]
    kept = saved[saved["status"] == "kept"]
    names = kept["group"].map(lambda g: "faces" if g is None or g != g else str(g))
    groups = {g: kept[names == g] for g in names.unique()}
    for g in sorted(groups, key=lambda g: (not g.isdigit(), int(g) if g.isdigit() else 0, g == "other", g)):
        yield f"group {g}" if g.isdigit() else g, groups[g]
    for status, title in (("rejected", "rejected"), ("duplicate", "duplicates")):
        part = saved[saved["status"] == status]
        if len(part):
            yield title, part


def write_gallery(table, path: str | os.PathLike, overwrite: bool = False) -> Path:
    """Write the gallery of a ``gpuface faces`` log table (:data:`gpuface.jobs.faces.LOG_COLUMNS`) at ``path``
    (a numbered sibling when one is there, unless ``overwrite``); returns the path written."""
    from gpuface.io.encode import free_path

    path = free_path(Path(path), overwrite)
    path.parent.mkdir(parents=True, exist_ok=True)
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>gpuface faces</title><style>{_STYLE}"
             f"</style><script>{_CHECK}</script></head><body><h1>Face crops</h1><p id='status'></p>"]
    for title, rows in _sections(table):
        parts.append(f"<section data-group='{html.escape(title)}'><h2>{html.escape(title)} ({len(rows)})</h2>"
                     "<div class='grid'>")
        for _, r in rows.iterrows():
            src = Path(os.path.relpath(r["file"], path.parent)).as_posix()
            where = [Path(str(r["video"])).name] if isinstance(r["video"], str) else []
            if r["frame"] == r["frame"] and r["frame"] is not None:
                where.append(f"frame {int(r['frame'])}")
            if r["time"] == r["time"] and r["time"] is not None:
                where.append(f"{float(r['time']):.2f} s")
            caption = "<br>".join(html.escape(x) for x in [Path(r["file"]).name, ", ".join(where),
                                                           str(r["reason"]) if isinstance(r["reason"], str) else ""]
                                  if x)
            parts.append(f"<figure><a href='{html.escape(src)}'><img src='{html.escape(src)}' loading='eager' "
                         f"alt='{html.escape(Path(r['file']).name)}'></a><figcaption>{caption}</figcaption></figure>")
        parts.append("</div></section>")
    parts.append("</body></html>")
    tmp = path.with_name(f".{path.name}.part")
    tmp.write_text("\n".join(parts), encoding="utf-8")
    os.replace(tmp, path)
    return path


__all__ = ["write_gallery"]
