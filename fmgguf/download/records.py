"""fmgguf's own records under ``settings.store_dir``, as small JSON files written atomically.

* ``lock.json`` — the hash lock: repo/file -> sha256 learned from the hub (``hub``), pinned by
  ``fmgguf catalog lock`` (``hub``), or trusted on first use (``tofu``). Later pulls and
  ``verify`` check against it when the catalog has no pin.
* ``models/<id>/<quant>.json`` — what is installed: files, where they are, their verified sha256,
  size and mtime at verification (a cheap check that nothing changed since).
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from fmgguf._util import JsonObject, json_list, json_object

if TYPE_CHECKING:
    from fmgguf.settings import Settings

#: where an expected hash came from, strongest first
SOURCES = ("pin", "hub", "lock", "bundle", "local", "tofu")


def write_json(path: Path, data: object) -> None:
    from fmgguf._util import atomic_write_text

    atomic_write_text(path, json.dumps(data, indent=1, sort_keys=True))


def read_json(path: Path) -> object:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (json.JSONDecodeError, UnicodeDecodeError, OSError):
        return None


def _filelock(path: Path):
    from filelock import FileLock

    path.parent.mkdir(parents=True, exist_ok=True)
    return FileLock(str(path) + ".lock", timeout=60)


def now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


class HashLock:
    """``store_dir/lock.json``: the sha256 fmgguf learned or was told for each repo file."""

    def __init__(self, store_dir: Path) -> None:
        self.path = Path(store_dir) / "lock.json"

    def _load(self) -> JsonObject:
        data = read_json(self.path)
        return data if isinstance(data, dict) and isinstance(data.get("files"), dict) else {"version": 1, "files": {}}

    def get(self, repo: str, filename: str) -> JsonObject | None:
        entry = json_object(self._load()["files"]).get(f"{repo}/{filename}")
        return entry if isinstance(entry, dict) and entry.get("sha256") else None

    def set(self, repo: str, filename: str, sha256: str, size: int | None, source: str, commit: str | None = None) -> None:
        with _filelock(self.path):
            data = self._load()
            json_object(data["files"])[f"{repo}/{filename}"] = {"sha256": sha256, "size": size, "source": source,
                                                   "commit": commit, "recorded_at": now()}
            write_json(self.path, data)

    def all(self) -> JsonObject:
        return dict(json_object(self._load()["files"]))


@dataclass
class FileRecord:
    name: str
    path: str
    size: int
    sha256: str
    source: str
    mtime_ns: int
    verified_at: str
    blob: str | None = None

    def unchanged(self) -> bool:
        """The file is where it was verified, with the same size and mtime."""
        try:
            st = os.stat(self.path)
        except OSError:
            return False
        return st.st_size == self.size and st.st_mtime_ns == self.mtime_ns


@dataclass
class ModelRecord:
    id: str
    quant: str
    repo: str
    commit: str | None
    revision: str | None
    origin: str  # "hub", "bundle" or "local"
    files: list[FileRecord] = field(default_factory=list)
    pulled_at: str = field(default_factory=now)

    @property
    def bytes(self) -> int:
        return sum(f.size for f in self.files)

    @property
    def verified_at(self) -> str | None:
        return min((f.verified_at for f in self.files), default=None)

    @property
    def sources(self) -> list[str]:
        return sorted({f.source for f in self.files}, key=SOURCES.index)

    def as_dict(self) -> JsonObject:
        out = asdict(self)
        out["bytes"] = self.bytes
        out["verified_at"] = self.verified_at
        out["trust"] = "tofu" if "tofu" in self.sources else self.sources[0] if self.sources else None
        out["path"] = self.files[0].path if self.files else None
        return out

    @classmethod
    def from_dict(cls, data: JsonObject) -> "ModelRecord":
        files = [FileRecord(**{k: v for k, v in json_object(f).items() if k in FileRecord.__dataclass_fields__})  # type: ignore[arg-type]
                 for f in json_list(data.get("files", []))]
        keep = {k: v for k, v in data.items() if k in cls.__dataclass_fields__ and k != "files"}
        return cls(**keep, files=files)  # type: ignore[arg-type]  # the fields as the record file holds them


def file_record(name: str, path: Path, sha256: str, source: str, blob: Path | None = None) -> FileRecord:
    st = os.stat(path)
    return FileRecord(name=name, path=str(path), size=st.st_size, sha256=sha256, source=source,
                      mtime_ns=st.st_mtime_ns, verified_at=now(), blob=str(blob) if blob else None)


class StoreRecords:
    """``store_dir/models/<id>/<quant>.json``: the installed models."""

    def __init__(self, store_dir: Path) -> None:
        self.root = Path(store_dir) / "models"

    def _path(self, model_id: str, quant: str) -> Path:
        return self.root / model_id / f"{quant}.json"

    def get(self, model_id: str, quant: str) -> ModelRecord | None:
        data = read_json(self._path(model_id, quant))
        if not isinstance(data, dict):
            return None
        try:
            return ModelRecord.from_dict(data)
        except TypeError:
            return None

    def put(self, record: ModelRecord) -> None:
        write_json(self._path(record.id, record.quant), asdict(record))

    def delete(self, model_id: str, quant: str) -> bool:
        path = self._path(model_id, quant)
        if not path.exists():
            return False
        path.unlink()
        try:
            path.parent.rmdir()
        except OSError:
            pass
        return True

    def quants(self, model_id: str) -> list[str]:
        folder = self.root / model_id
        return sorted(p.stem for p in folder.glob("*.json")) if folder.is_dir() else []

    def all(self) -> list[ModelRecord]:
        out: list[ModelRecord] = []
        if not self.root.is_dir():
            return out
        for folder in sorted(self.root.iterdir()):
            for quant in self.quants(folder.name):
                rec = self.get(folder.name, quant)
                if rec is not None:
                    out.append(rec)
        return out


def downloaded_quants(settings: Settings) -> dict[tuple[str, str], bool]:
    """(id, quant) -> True for every installed model whose files are unchanged since verification.
    Cheap (reads small JSON files; no hub import): used by `fmgguf list`/`info`."""
    return {(rec.id, rec.quant): all(f.unchanged() for f in rec.files)
            for rec in StoreRecords(settings.store_dir).all() if rec.files}
