"""Catalog entries for tiny models: real sizes, sha256s and architecture numbers of the built files.

``tiny_card("tiny-qwen2")`` is a user-catalog entry (a raw dict, valid against
:class:`fmgguf.catalog.schema.ModelCard`); ``tiny_repo_files("tiny-qwen2", ...)`` maps the file
names that entry lists to the local built files, ready for a loopback hub to serve.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from fmgguf._util import atomic_write_text
from fmgguf.download.hashing import sha256_file
from fmgguf.tiny.tiny_models import build_tiny_model
from fmgguf.tiny.tiny_specs import TinySpec, tiny_spec
from fmgguf.tiny.tiny_writer import tensor_shapes


def file_sha256(path: Path) -> str:
    """sha256 of a (cached, immutable) file, remembered in a ``.sha256`` sidecar keyed by size and mtime."""
    st = path.stat()
    stamp = f"{st.st_size} {st.st_mtime_ns}"
    side = path.with_name(path.name + ".sha256")
    try:
        digest, recorded = side.read_text().split(" ", 1)
        if recorded.strip() == stamp and len(digest) == 64:
            return digest
    except (OSError, ValueError):
        pass
    digest = sha256_file(path)
    try:
        atomic_write_text(side, f"{digest} {stamp}\n")
    except OSError:
        pass  # a read-only cache: the digest is simply computed again next time
    return digest


def parameter_counts(spec: TinySpec, n_vocab: int) -> tuple[int, int]:
    """(total, active per token) parameters: every tensor element; MoE counts only the used experts."""
    total = 0
    inactive = 0
    for name, shape in tensor_shapes(spec, n_vocab):
        n = 1
        for d in shape:
            n *= d
        total += n
        if "_exps." in name:
            inactive += n // spec.n_expert * (spec.n_expert - spec.n_expert_used)
    return total, total - inactive


def arch_from_file(path: Path, spec: TinySpec) -> dict:
    """The catalog ``arch`` block, read from the GGUF's own metadata and tensor table."""
    from fmgguf.runtime.gguf.card_arch import card_numbers
    from fmgguf.runtime.gguf.gguf_file import read_gguf

    arch = card_numbers(read_gguf(path))[0]
    assert arch["tied_embeddings"] == spec.tied, "the built file disagrees with its spec"
    return arch


def tiny_repo_files(model_id: str, arch: str = "qwen2", size: str = "unit",
                    quants: Sequence[str] = ("Q4_K_M", "Q8_0"), seed: int = 0) -> dict[str, Path]:
    """``{f"{model_id}-{quant}.gguf": built file}`` for each quant (building what is missing)."""
    return {f"{model_id}-{q}.gguf": build_tiny_model(arch, size, q, seed) for q in quants}


def tiny_card(model_id: str, arch: str = "qwen2", size: str = "unit", repo: str | None = None,
              quants: Sequence[str] = ("Q4_K_M", "Q8_0"), seed: int = 0) -> dict:
    """A user-catalog entry for a tiny model whose files really exist (sizes and sha256s are real)."""
    spec = tiny_spec(arch, size)
    repo = repo or f"fmgguf-test/tiny-{arch}-GGUF"
    files = tiny_repo_files(model_id, arch, size, quants, seed)
    first = next(iter(files.values()))
    arch_block = arch_from_file(first, spec)
    total, active = parameter_counts(spec, arch_block["vocab"])
    variants = {
        name.removeprefix(f"{model_id}-").removesuffix(".gguf"): {
            "repo": repo,
            "revision": None,
            "files": [{"name": name, "size": path.stat().st_size, "sha256": file_sha256(path)}],
        }
        for name, path in files.items()
    }
    card: dict = {
        "id": model_id,
        "family": "tiny",
        "display_name": f"Tiny {arch} ({size}, random weights)",
        "parameters": {"total": total, "active": active},
        "arch": arch_block,
        "license": "apache-2.0",
        "chat_template": spec.chat_template,
        "specialization": "test model: real tokenizer and architecture, random weights (gibberish output)",
        "capabilities": ["test"],
        "variants": variants,
        "notes": [f"built locally by fmgguf.tiny (seed {seed}); not a real model"],
        "builtin": False,
    }
    if spec.fim:
        card["fim"] = {"prefix": spec.fim["pre"], "suffix": spec.fim["suf"], "middle": spec.fim["mid"],
                       "order": "PSM", "supported": True}
    from fmgguf.catalog.schema import ModelCard

    ModelCard.model_validate(card)  # fail here, not in the test that uses it
    return card
