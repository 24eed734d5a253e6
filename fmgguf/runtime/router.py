"""Which resident model serves a request: llama.cpp's router step ``ensure_model_ready``, before the
request goes to the model's queue (:class:`~fmgguf.runtime.manager.ModelManager`).

A reference is a local .gguf path, a model loaded here before, or a catalog model ("id",
"id:QUANT"); a runner found dead on the way is counted as a crash and its model loaded again.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from fmgguf.errors import ModelNotLoadedError
from fmgguf.runtime.runner.residency import LoadSpec, Resident
from fmgguf.runtime.runner.supervisor import Supervisor

if TYPE_CHECKING:
    from fmgguf.catalog import Catalog
    from fmgguf.download import ModelDownloader

Options = object  # a load option's value (checked by load_request)


class Router:
    """Resolves a model reference to a ready :class:`Resident` of ``sup``, loading it when needed.
    ``catalog``/``downloader`` are read on each use (the server swaps the catalog on a hot reload)."""

    def __init__(self, sup: Supervisor, catalog: Callable[[], "Catalog"],
                 downloader: Callable[[], "ModelDownloader"]) -> None:
        self.sup, self._catalog, self._downloader = sup, catalog, downloader

    def spec(self, ref: str) -> LoadSpec:
        """A local .gguf file (its key is the file's stem), a model loaded here before (a file's key
        after an idle unload or a crash), or a catalog model ("id", "id:QUANT")."""
        p = Path(ref).expanduser()
        if ref.endswith(".gguf") and p.is_file():
            return LoadSpec(key=p.stem, path=p, model_id=p.stem, quant=None)
        known = self.sup.known.get(ref)
        return known if known is not None and known.card is None else self.catalog_spec(ref)

    def catalog_spec(self, ref: str) -> LoadSpec:
        card, q = self._catalog().resolve(ref)
        path = Path(self._downloader().model_path(card.id, q))  # NotDownloadedError says `fmgguf pull ID`
        return LoadSpec(key=f"{card.id}:{q}", path=path, model_id=card.id, quant=q, card=card)

    def resident(self, ref: str, keep_alive: float | None, options: Mapping[str, Options],
                 pinned: bool = False) -> Resident:
        """The resident model ``ref``, loaded now if it is not (or if it was with other options)."""
        r = self.usable(self.sup.find(ref))
        if r is None or options:
            with self.sup.changes:
                r = self.usable(self.sup.find(ref))
                spec = r.spec if r is not None else self.spec(ref)
                r = r or self.usable(self.sup.find(spec.key))
                if r is not None and any(k != "progress" and r.spec.options.get(k) != v for k, v in options.items()):
                    self.sup.unload(r)  # asked for with other load options (a longer context...): load it again
                    r = None
                if r is None:
                    r = self.sup.load(spec, options or spec.options, select=False, replace=False,
                                      keep_alive=keep_alive, pinned=pinned)
        if pinned:
            r.pinned = True
        if keep_alive is not None:
            r.keep_alive = float(keep_alive)
        return r

    def usable(self, r: Resident | None) -> Resident | None:
        """``r`` if its engine still serves; a runner found dead is counted as a crash and dropped."""
        if r is None or r.leaving:
            return None
        failure = r.engine.failure()
        if failure is not None:
            self.sup.crashed(r.spec, failure, r)
        return r if failure is None else None

    def selected(self, keep_alive: float | None) -> Resident:
        """The selected model, loaded again if an idle unload or a crash took it."""
        r = self.usable(self.sup.selected_resident())
        if r is None:
            with self.sup.changes:
                spec = self.sup.selected_spec
                r = self.usable(self.sup.selected_resident())
                if r is None and spec is not None:
                    r = self.sup.load(spec, spec.options, select=True, replace=False)
        if r is None:
            raise ModelNotLoadedError("no model is loaded", fix="load one first: `switch_model(ID)` / `fmgguf run ID`")
        if keep_alive is not None:
            r.keep_alive = float(keep_alive)
        return r
