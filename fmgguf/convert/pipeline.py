"""Checkpoint directory → NAME-F16.gguf, NAME-Q8_0.gguf, NAME-Q4_K_M.gguf and NAME.catalog.yaml.

Order: cheap checks first (checkpoint files, architecture, disk with numbers), then the converter
and its requirements, then the slow steps. Every file is written under a hidden temporary name and
renamed when complete, so a final name never holds a half-written GGUF. A state file records which
checkpoint (and imatrix) the finished files came from: re-running after an interruption skips what is
done; re-running on a changed checkpoint starts over.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from fmgguf._util import JsonObject, atomic_write_text, human_bytes
from fmgguf.convert.checkpoint import Checkpoint, check_architecture, check_disk, read_checkpoint
from fmgguf.convert.entry import build_entry, model_id_for, sha256_file
from fmgguf.convert.quantize import FTYPES, quantize
from fmgguf.convert.toolchain import Converter, ensure_converter, ensure_requirements
from fmgguf.errors import ConvertError

DEFAULT_QUANTS = ("Q8_0", "Q4_K_M")
_NAME_OK = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-")

#: converter output line → (message, fix) for failures users can act on
_KNOWN_FAILURES = (
    ("BPE pre-tokenizer was not recognized",
     "the checkpoint's BPE tokenizer is not one llama.cpp's converter recognises",
     "use the tokenizer of a supported model family, or add its pre-tokenizer to llama.cpp upstream"),
    ("is not supported", "llama.cpp's converter does not support this architecture",
     "use a checkpoint of a supported architecture"),
    ("No such file or directory", "the converter could not find a file it needs in the checkpoint",
     "check that the tokenizer, config and all weight shards are present"),
    ("Can not map tensor", "the checkpoint has tensors the converter cannot map for this architecture",
     "check that config.json matches the weights"),
)


@dataclass
class ConvertResult:
    files: dict[str, Path]
    entry: JsonObject
    entry_path: Path
    skipped: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)

    def as_dict(self) -> JsonObject:
        return {"files": {q: str(p) for q, p in self.files.items()}, "catalog_entry": str(self.entry_path),
                "model_id": self.entry["id"], "skipped": self.skipped,
                "timings_s": {k: round(v, 3) for k, v in self.timings.items()}}


def _is_complete_gguf(path: Path) -> bool:
    try:
        with open(path, "rb") as fh:
            if fh.read(4) != b"GGUF":
                return False
        from gguf import GGUFReader

        GGUFReader(str(path))  # header, metadata and tensor table parse, and data fits in the file
        return True
    except (OSError, ValueError, KeyError, IndexError):  # what gguf's reader raises on a bad or short file
        return False


def _lock(path: Path):
    from filelock import FileLock

    return FileLock(str(path), timeout=0)


def _run_converter(converter: Converter, ckpt_dir: Path, tmp: Path, name: str, log_path: Path) -> None:
    cmd = [sys.executable, str(converter.script), str(ckpt_dir), "--outfile", str(tmp), "--outtype", "f16",
           "--model-name", name]
    with open(log_path, "w", encoding="utf-8") as log:
        log.write(" ".join(cmd) + "\n")
        log.flush()
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=converter.env(), cwd=str(tmp.parent))
        try:
            rc = proc.wait()
        except BaseException:
            proc.kill()
            proc.wait()
            raise
    if rc != 0:
        text = log_path.read_text(encoding="utf-8", errors="replace")
        for needle, message, fix in _KNOWN_FAILURES:
            if needle in text:
                raise ConvertError(f"{message} (see {log_path})", fix=fix)
        lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
        last = lines[-1] if lines else f"exit code {rc}"
        raise ConvertError(f"llama.cpp's converter failed: {last[:300]} (full log: {log_path})",
                           fix="check the checkpoint files; the log shows which one")
    if not _is_complete_gguf(tmp):
        raise ConvertError(f"the converter exited cleanly but {tmp.name} is not a complete GGUF",
                           fix=f"see {log_path} and run again")


def _fingerprint(ckpt, imatrix: Path | None) -> dict[str, str]:
    return {"checkpoint": ckpt.fingerprint(), "imatrix": sha256_file(imatrix) if imatrix else ""}


@dataclass
class _Job:
    """One conversion's checked arguments and where its outputs go."""

    ckpt_path: Path
    name: str
    model_id: str
    repo: str | None
    quants: tuple[str, ...]
    imatrix: Path | None
    out: Path
    say: Callable[[str], None]
    t0: float = field(default_factory=time.monotonic)
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def final(self) -> dict[str, Path]:
        return {"F16": self.out / f"{self.name}-F16.gguf", **{q: self.out / f"{self.name}-{q}.gguf" for q in self.quants}}

    @property
    def state_path(self) -> Path:
        return self.out / f".{self.name}.convert.json"


def convert_checkpoint(checkpoint: str | os.PathLike[str], name: str, out_dir: str | os.PathLike[str], *,
                       imatrix: str | os.PathLike[str] | None = None, model_id: str | None = None,
                       repo: str | None = None, quants: tuple[str, ...] = DEFAULT_QUANTS,
                       install: bool = True, cache_dir: str | os.PathLike[str] | None = None,
                       echo: Callable[[str], None] | None = None) -> ConvertResult:
    """Convert a local HF checkpoint directory; see the module doc for the guarantees."""
    job = _checked_job(checkpoint, name, out_dir, imatrix, model_id, repo, quants, echo or (lambda _msg: None))
    job.out.mkdir(parents=True, exist_ok=True)

    from filelock import Timeout

    lock = _lock(job.out / f".{name}.convert.lock")
    try:
        lock.acquire()
    except Timeout:
        raise ConvertError(f"another conversion of {name} into {job.out} is running",
                           fix="wait for it to finish, or use another --out directory") from None
    try:
        return _convert_locked(job, install, cache_dir)
    finally:
        lock.release()


def _checked_job(checkpoint: str | os.PathLike[str], name: str, out_dir: str | os.PathLike[str],
                 imatrix: str | os.PathLike[str] | None, model_id: str | None, repo: str | None,
                 quants: tuple[str, ...], say: Callable[[str], None]) -> _Job:
    """The arguments checked (one line naming the bad flag), before anything is touched."""
    if not name or not set(name) <= _NAME_OK or name.startswith((".", "-")):
        raise ConvertError(f"--name {name!r} is not a usable file-name stem",
                           fix="use letters, digits, '.', '_' or '-', e.g. MyCoder-1B")
    for q in quants:
        if q not in FTYPES:
            raise ConvertError(f"cannot quantize to {q}", fix=f"use some of: {', '.join(FTYPES)}")
    mid = model_id or model_id_for(name)
    if not re.match(r"^[a-z0-9][a-z0-9._-]*$", mid) or ".." in mid:
        raise ConvertError(f"--model-id {mid!r} is not a catalog id",
                           fix="use lower-case letters, digits, '.', '_' or '-', e.g. mycoder-1b")
    if repo is not None and not re.match(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$", repo):
        raise ConvertError(f"--repo {repo!r} is not of the form owner/name", fix="e.g. --repo myorg/MyCoder-1B-GGUF")
    ckpt_path = Path(checkpoint).expanduser()
    if not ckpt_path.exists() and "/" in str(checkpoint) and len(str(checkpoint).split("/")) == 2 \
            and not str(checkpoint).startswith((".", "/", "~")):
        raise ConvertError(f"{checkpoint} is not a local directory (hub repo ids are not fetched here)",
                           fix=f"download it first: hf download {checkpoint} --local-dir DIR, then convert DIR")
    imatrix_path = Path(imatrix).expanduser() if imatrix else None
    if imatrix_path is not None and not imatrix_path.is_file():
        raise ConvertError(f"imatrix file {imatrix_path} does not exist", fix="give the file llama-imatrix wrote")
    return _Job(ckpt_path, name, mid, repo, tuple(quants), imatrix_path, Path(out_dir).expanduser(), say)


def _convert_locked(job: _Job, install: bool, cache_dir: str | os.PathLike[str] | None) -> ConvertResult:
    """The conversion proper, under the output folder's lock: checks, F16, quants, catalog entry."""
    # Leftovers of an interrupted run: only temp names of ours, and we hold the lock.
    for stale in job.out.glob(f".{job.name}-*.gguf.partial"):
        stale.unlink(missing_ok=True)
    ckpt = read_checkpoint(job.ckpt_path)
    want = _fingerprint(ckpt, job.imatrix)
    done = _resume(job, want)
    already = sum(job.final[q].stat().st_size for q, ok in done.items() if ok)
    need = check_disk(job.out, ckpt.f16_bytes, already=already)
    job.say(f"{ckpt.architecture}: ~{human_bytes(ckpt.f16_bytes)} F16; needs ~{human_bytes(need)} free in {job.out}")
    converter = ensure_converter(cache_dir)
    check_architecture(ckpt.architecture, converter.architectures())
    job.timings["checks"] = time.monotonic() - job.t0
    state = {**want, "done": {q: ok for q, ok in done.items() if ok}}
    _write_json(job.state_path, state)

    installed = ensure_requirements(install=install, echo=job.say) if not done["F16"] else []
    if installed:
        job.say(f"installed: {', '.join(installed)}")
    skipped = [q for q, ok in done.items() if ok]
    if not done["F16"]:
        _build_f16(job, converter, ckpt.path, state)
    for q in job.quants:
        if not done[q]:
            _build_quant(job, q, state)
    entry, entry_path = _write_entry(job, ckpt, converter.version, want)
    job.timings["total"] = time.monotonic() - job.t0
    return ConvertResult(job.final, entry, entry_path, skipped, job.timings)


def _resume(job: _Job, want: dict[str, str]) -> dict[str, bool]:
    """Which outputs an earlier run finished from this same checkpoint (and imatrix); the rest are removed."""
    try:
        state = json.loads(job.state_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        state = {}
    done: dict[str, bool] = {}
    for q, p in job.final.items():
        same_input = state.get("checkpoint") == want["checkpoint"] and \
            (q == "F16" or state.get("imatrix") == want["imatrix"])
        done[q] = p.is_file() and bool(state.get("done", {}).get(q)) and same_input and _is_complete_gguf(p)
    if not done["F16"]:
        done = {q: False for q in job.final}  # new F16 → every quant is rebuilt from it
    for q, p in job.final.items():
        if p.exists() and not done[q]:  # stale (other checkpoint/imatrix) or damaged: never mix sets
            job.say(f"{p.name} is from another run or incomplete: rebuilding it")
            p.unlink()
    return done


def _build_f16(job: _Job, converter: Converter, ckpt_dir: Path, state: JsonObject) -> None:
    tmp = job.out / f".{job.name}-F16.gguf.partial"
    job.say(f"converting {ckpt_dir} → {job.final['F16'].name} (llama.cpp convert_hf_to_gguf.py {converter.version})")
    t = time.monotonic()
    try:
        _run_converter(converter, ckpt_dir, tmp, job.name, job.out / f".{job.name}.convert.log")
        os.replace(tmp, job.final["F16"])
    finally:
        tmp.unlink(missing_ok=True)
    job.timings["convert_f16"] = time.monotonic() - t
    state["done"]["F16"] = True
    _write_json(job.state_path, state)


def _build_quant(job: _Job, q: str, state: JsonObject) -> None:
    tmp = job.out / f".{job.name}-{q}.gguf.partial"
    job.say(f"quantizing → {job.final[q].name}" + (f" with imatrix {job.imatrix.name}" if job.imatrix else ""))
    t = time.monotonic()
    try:
        quantize(job.final["F16"], tmp, q, imatrix=job.imatrix)
        if not _is_complete_gguf(tmp):
            raise ConvertError(f"llama.cpp wrote an unreadable {q} file", fix="run again")
        os.replace(tmp, job.final[q])
    finally:
        tmp.unlink(missing_ok=True)
    job.timings[f"quantize_{q}"] = time.monotonic() - t
    state["done"][q] = True
    _write_json(job.state_path, state)


def _write_entry(job: _Job, ckpt: Checkpoint, converter_version: str, want: dict[str, str]) -> tuple[JsonObject, Path]:
    """The catalog entry for the finished files, as ``NAME.catalog.yaml`` beside them."""
    t = time.monotonic()
    source = str(ckpt.config.get("_name_or_path") or "")
    source = source if re.match(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$", source) else None  # a hub id, not a local path
    notes = [f"built by fmgguf convert with llama.cpp from llama-cpp-python {converter_version}"]
    if job.imatrix:
        notes.append(f"quantized with imatrix {job.imatrix.name} ({want['imatrix'][:12]})")
    entry = build_entry(job.model_id, job.name, job.final, repo=job.repo, source=source, notes=notes)
    entry_path = job.out / f"{job.name}.catalog.yaml"
    _write_yaml(entry_path, entry)
    job.timings["catalog_entry"] = time.monotonic() - t
    return entry, entry_path


def _write_json(path: Path, data: dict) -> None:
    atomic_write_text(path, json.dumps(data, indent=1))


def _write_yaml(path: Path, entry: dict) -> None:
    """The entry as a user-catalog file (``models:`` list): usable as FMGGUF_CATALOG or with `catalog` commands."""
    import yaml

    text = "# fmgguf catalog entry written by `fmgguf convert`; merge with `fmgguf import-gguf` or FMGGUF_CATALOG\n"
    text += yaml.safe_dump({"models": [entry]}, sort_keys=False, allow_unicode=True)
    atomic_write_text(path, text)
