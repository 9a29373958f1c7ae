"""The run directory: atomic writes, stage manifests and safe paths.

Every file is written to a temporary name in the same folder and renamed into place, so a
killed process leaves either the old file or the new one, never half of one. A stage counts
as complete only when its manifest lists the config hash and a content hash of each output.
Under `accelerate launch` only the main process writes; the others wait until the file is in place.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import sys
import re
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch

from rmtension.run import dist
from rmtension.errors import ArtifactError
from rmtension.run.saved_config import configured, read_config  # noqa: F401 (re-exported: the run directory's files)
from safetensors.torch import save
from safetensors.torch import load

MANIFESTS = "manifests"


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Write `data` to `path` atomically.

    Under several processes (`accelerate launch`) only the main one writes and every process
    returns once the file is in place, so call it from every process (`rmtension.run.dist.main_only`).
    """
    path = Path(path)
    dist.main_only(_write_atomically, path, data)
    return path


def _write_atomically(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | Path, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def write_json(path: str | Path, obj: Any) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n")


def _json_default(o: Any) -> Any:
    if hasattr(o, "tolist"):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def read_json(path: str | Path) -> Any:
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ArtifactError(f"{path}: missing") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ArtifactError(f"{path}: corrupted JSON ({e})") from None


def write_csv(path: str | Path, frame: Any) -> Path:
    """Write a pandas DataFrame atomically."""
    return atomic_write_text(path, frame.to_csv(index=False))


def save_tensors(
    path: str | Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None
) -> Path:
    """safetensors, written atomically."""

    data = save({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, metadata=metadata)
    return atomic_write_bytes(path, data)


def load_tensors(path: str | Path) -> dict[str, torch.Tensor]:
    path = Path(path)
    try:
        return load(path.read_bytes())
    except FileNotFoundError:
        raise ArtifactError(f"{path}: missing") from None
    except Exception as e:  # safetensors raises its own error types for truncation
        raise ArtifactError(f"{path}: corrupted safetensors ({e})") from None


def save_torch_state(path: str | Path, obj: Any) -> Path:
    """Optimiser/scheduler state (tensors and plain containers only), written atomically."""
    buf = io.BytesIO()
    torch.save(obj, buf)
    return atomic_write_bytes(path, buf.getvalue())


def load_torch_state(path: str | Path) -> Any:
    """Never unpickles arbitrary objects: `weights_only=True`."""
    try:
        return torch.load(Path(path), map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise ArtifactError(f"{path}: missing") from None
    except Exception as e:
        raise ArtifactError(
            f"{path}: refused or corrupted checkpoint state ({type(e).__name__}: {str(e)[:200]})"
        ) from None


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


_SAFE = re.compile(r"[^A-Za-z0-9._-]+")


def safe_name(name: str) -> str:
    """A single path component from an untrusted name (`../x/y` -> `x_y`)."""
    cleaned = _SAFE.sub("_", name).strip("._") or "_"
    return cleaned[:120]


def inside(root: str | Path, *parts: str) -> Path:
    """Join untrusted parts under root; each becomes one safe component."""
    root = Path(root).resolve()
    path = root.joinpath(*(safe_name(p) for p in parts)).resolve()
    if root != path and root not in path.parents:
        raise ArtifactError(f"{path}: outside the run directory {root}")
    return path


def write_manifest(run_dir: str | Path, stage: str, config_hash: str, outputs: Iterable[str | Path]) -> Path:
    """Mark a stage complete: config hash plus a content hash of every output (relative paths)."""
    run_dir = Path(run_dir)
    files = {}
    for out in outputs:
        p = Path(out)
        p = p if p.is_absolute() else run_dir / p
        for f in sorted(p.rglob("*")) if p.is_dir() else [p]:
            if f.is_file() and not f.name.startswith("."):
                files[str(f.relative_to(run_dir))] = sha256_file(f)
    return write_json(
        run_dir / MANIFESTS / f"{safe_name(stage)}.json",
        {"stage": stage, "config_hash": config_hash, "files": files},
    )


def stage_complete(run_dir: str | Path, stage: str, config_hash: str, verify: bool = True) -> bool:
    """True when the stage's manifest exists with this config hash and every output still matches.

    A missing, truncated or edited output makes the stage incomplete, so it is recomputed.
    """
    run_dir = Path(run_dir)
    mpath = run_dir / MANIFESTS / f"{safe_name(stage)}.json"
    if not mpath.exists():
        return False
    try:
        manifest = read_json(mpath)
    except ArtifactError:
        return False
    if manifest.get("config_hash") != config_hash:
        return False
    if not verify:
        return True
    for rel, digest in manifest.get("files", {}).items():
        f = run_dir / rel
        if not f.is_file() or sha256_file(f) != digest:
            what = "is missing" if not f.is_file() else "differs from what was written (truncated or edited)"
            dist.print_main(
                f"[rmtension] {stage}: {rel} {what}; recomputing the stage", file=sys.stderr, flush=True
            )
            return False
    return True
