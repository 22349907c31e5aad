"""Get the model: download it from the Hugging Face hub (or take a local folder), verify it, save FP32 safetensors.

usage: python -m pipeline.weights [MODEL_ID] [--revision REV] [--dest DIR] [--force] [--download-only]
       python -m pipeline.weights [MODEL_ID] --from-dir DIR [--dest DIR] [--force]
       python -m pipeline.weights --verify DIR
"""

from __future__ import annotations

import argparse
import errno
import fnmatch
import hashlib
import json
import os
import shutil
import sys
from pathlib import Path

# Only .errors at import time: the Dockerfile's download step runs with this file and errors.py alone, so
# editing the app never invalidates the downloaded layer.
from .errors import WeightsNotFoundError
from .fp32 import WeightsError, convert_shard, fp32_size

DEFAULT_MODEL_ID = "Qwen/Qwen1.5-0.5B-Chat"
SUPPORTED_MODEL_IDS = ("Qwen/Qwen1.5-0.5B-Chat", "Qwen/Qwen2.5-0.5B-Instruct")
WEIGHTS_ROOT = Path(__file__).resolve().parent.parent / "weights"
MANIFEST = "manifest.json"
# What a model folder needs; other formats (.bin, .gguf, onnx) and docs in a hub repo are left out.
ALLOW_PATTERNS = ("*.json", "*.safetensors", "*.txt", "*.jinja", "*.model", "*.tiktoken", "LICENSE*")
_HUB_TIMEOUT_S = 15.0
_CHUNK = 1 << 24


def default_dest(name: str) -> Path:
    """weights/<last part of the model id or folder name>."""
    return WEIGHTS_ROOT / name.rstrip("/").split("/")[-1]


def fetch(model_id: str = DEFAULT_MODEL_ID, revision: str | None = None, dest: Path | None = None,
          force: bool = False) -> Path:
    """Download model_id from the hub, verify it against the hub's checksums and save it as FP32 in dest."""
    dest = Path(dest or default_dest(model_id))
    if not force and _already_there(dest, model_id, revision):
        return dest
    staging = dest.parent / f".{dest.name}.download"
    try:
        download(model_id, revision, staging, room_for_fp32=True)
        convert(staging, dest, force=True)
    finally:
        shutil.rmtree(staging, ignore_errors=True)  # failed or not: no hidden half-download left next to dest
    return dest


def download(model_id: str, revision: str | None, folder: Path, room_for_fp32: bool = False) -> Path:
    """Download model_id's files as they are on the hub into folder, checked against the hub's checksums."""
    folder = Path(folder)
    info = _model_info(model_id, revision)
    files = {s.rfilename: s for s in info.siblings or [] if _wanted(s.rfilename)}
    weight_bytes = sum(s.size or 0 for name, s in files.items() if name.endswith(".safetensors"))
    if not weight_bytes:
        raise WeightsError(f"{model_id} has no .safetensors weights on the hub; this tool converts safetensors only.")
    # The FP32 copy is at most twice the size of a BF16/FP16 checkpoint.
    needed = sum(s.size or 0 for s in files.values()) + (2 * weight_bytes if room_for_fp32 else 0)
    ensure_free_space(folder.parent, needed)
    created = not folder.exists()
    try:
        _download(model_id, info.sha, folder, sorted(files))
        manifest = {"model_id": model_id, "revision": info.sha, "source": _endpoint(),
                    "created_by": "python -m pipeline.weights", "files": _verify_download(folder, files)}
        _write_text(folder / MANIFEST, json.dumps(manifest, indent=2, ensure_ascii=False) + "\n")
    except BaseException:
        # huggingface_hub deletes a partly downloaded file, so a half-filled folder would only block the next
        # run (it refuses an existing dest without --force): remove the folder if this run made it.
        if created:
            shutil.rmtree(folder, ignore_errors=True)
        raise
    return folder


def convert(src: Path, dest: Path | None = None, model_id: str | None = None, revision: str | None = None,
            source: str | None = None, force: bool = False) -> Path:
    """Check the model folder src and write it to dest with FP32 safetensors and a manifest; dest may be src."""
    src = Path(src).resolve()
    _check_model_dir(src)
    previous = _read_manifest(src)
    if previous.get("files"):  # a folder this tool wrote (or downloaded): it must still be what it was
        verify(src)
    model_id = model_id or previous.get("model_id") or f"local/{src.name}"
    revision = revision or previous.get("revision") or _revision_from_path(src)
    source = source or previous.get("source") or f"local folder {src}"
    dest = Path(dest or default_dest(model_id)).resolve()
    if dest.exists() and dest != src and not force:
        raise WeightsError(f"{dest} already exists; pass --force to replace it.")
    shards = sorted(p.name for p in src.glob("*.safetensors"))
    others = sorted(p.name for p in src.iterdir() if p.is_file() and _wanted(p.name)
                    and not p.name.endswith(".safetensors") and p.name != MANIFEST)
    ensure_free_space(dest.parent, sum(fp32_size(src / s) for s in shards)
                      + sum((src / o).stat().st_size for o in others))
    partial = dest.parent / f".{dest.name}.partial"
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    try:
        files = _write_folder(src, partial, shards, others)
        manifest = {"model_id": model_id, "revision": revision, "source": source,
                    "dtype": "float32", "created_by": "python -m pipeline.weights", "files": files}
        _write_text(partial / MANIFEST, json.dumps(manifest, indent=2, ensure_ascii=False) + "\n")
        verify(partial)
        _replace(partial, dest)
    except OSError as exc:
        shutil.rmtree(partial, ignore_errors=True)
        full = " (disk full: free some space or pass --dest on a bigger disk)" if exc.errno == errno.ENOSPC else ""
        raise WeightsError(f"could not write {dest}: {exc}{full}") from None
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    return dest


def verify(model_dir: Path) -> dict:
    """The manifest of model_dir, after checking that every file in it has its recorded size and sha256."""
    model_dir = Path(model_dir)
    _check_model_dir(model_dir)
    manifest = _read_manifest(model_dir)
    if not manifest.get("files"):
        raise WeightsError(f"{model_dir} has no {MANIFEST}: make it with "
                           f"`python -m pipeline.weights --from-dir {model_dir}`.")
    for name, meta in manifest["files"].items():
        path = model_dir / name
        if not path.is_file():
            raise WeightsError(f"{path} is listed in {MANIFEST} but missing: the folder is incomplete, fetch it again.")
        if path.stat().st_size != meta["size"] or sha256_file(path) != meta["sha256"]:
            raise WeightsError(f"{path} does not match its sha256 in {MANIFEST}: it is damaged, fetch it again "
                               f"(or delete {MANIFEST} if you changed the file on purpose).")
    return manifest


def ensure_free_space(folder: Path, needed: int) -> None:
    """Raise WeightsError unless the disk holding folder (or its nearest existing parent) has needed bytes free."""
    probe = Path(folder).resolve()
    while not probe.exists():
        probe = probe.parent
    free = shutil.disk_usage(probe).free
    if free < needed:
        raise WeightsError(f"not enough disk space in {probe}: need {_gib(needed)}, {_gib(free)} free. "
                           f"Free some space or pass --dest on a bigger disk.")


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _check_model_dir(model_dir: Path) -> None:
    from .loading import check_model_dir

    try:
        check_model_dir(model_dir)
    except WeightsNotFoundError as exc:
        raise WeightsError(str(exc)) from None


def _already_there(dest: Path, model_id: str, revision: str | None) -> bool:
    manifest = _read_manifest(dest)
    if manifest.get("model_id") != model_id:
        if dest.exists():
            raise WeightsError(f"{dest} already exists but has no manifest for {model_id}"
                               f"{'@' + revision if revision else ''}: convert what is there with "
                               f"`python -m pipeline.weights --from-dir {dest}`, or pass --force to download again.")
        return False
    # The manifest records a commit; a branch or tag name (--revision main) is asked of the hub.
    held = manifest.get("revision")
    if revision and revision != held and _model_info(model_id, revision).sha != held:
        raise WeightsError(f"{dest} holds {model_id}@{held}, not revision {revision}: "
                           "pass --force to replace it, or --dest another folder.")
    verify(dest)
    print(f"{dest} already holds {model_id}@{manifest['revision']} (verified); pass --force to fetch again.",
          file=sys.stderr)
    return True


def _model_info(model_id: str, revision: str | None):
    # One metadata call first: it fails fast on no network / unknown model, and gives sizes and checksums.
    from huggingface_hub import HfApi, errors

    where = _endpoint()
    try:
        return HfApi().model_info(model_id, revision=revision, files_metadata=True, timeout=_HUB_TIMEOUT_S)
    except errors.RevisionNotFoundError:
        raise WeightsError(f"{model_id} has no revision {revision!r} on {where}.") from None
    except errors.GatedRepoError:
        raise WeightsError(f"{model_id} is gated on {where}: accept its licence there and set HF_TOKEN.") from None
    except errors.RepositoryNotFoundError:
        raise WeightsError(f"unknown model {model_id!r}: {where} has no such model (or it is private). "
                           f"Supported: {', '.join(SUPPORTED_MODEL_IDS)}.") from None
    except errors.OfflineModeIsEnabled:
        raise WeightsError("HF_HUB_OFFLINE is set, so nothing can be downloaded: unset it, or convert a folder "
                           "you already have with --from-dir DIR.") from None
    except errors.HfHubHTTPError as exc:
        raise WeightsError(f"{where} answered with an error for {model_id}: {_first_line(exc)}") from None
    except errors.HTTPError as exc:  # transport level: DNS, refused, timeout, TLS
        raise WeightsError(
            f"cannot reach {where} ({type(exc).__name__}: {_first_line(exc)}). No network? On an air-gapped "
            "machine copy the model folder over and run `python -m pipeline.weights --from-dir DIR`.") from None


def _download(model_id: str, revision: str, staging: Path, names: list[str]) -> None:
    from huggingface_hub import errors, snapshot_download

    print(f"downloading {model_id}@{revision[:12]} from {_endpoint()} into {staging}", file=sys.stderr)
    try:
        snapshot_download(model_id, revision=revision, local_dir=staging, allow_patterns=names)
    except (errors.HTTPError, errors.LocalEntryNotFoundError) as exc:
        raise WeightsError(f"download of {model_id} failed: {_first_line(exc)}. Check the network and run the same "
                           "command again.") from None
    except OSError as exc:
        raise WeightsError(f"download of {model_id} into {staging} failed: {_first_line(exc)}") from None


def _verify_download(staging: Path, files: dict) -> dict:
    checked = {}
    for name, sibling in sorted(files.items()):
        path = staging / name
        if not path.is_file():
            raise WeightsError(f"download incomplete: {path} is missing. Run the same command again to resume.")
        sha256 = sha256_file(path)
        if sibling.lfs is not None:
            ok = sha256 == sibling.lfs.sha256
        else:
            ok = sibling.blob_id is None or _git_blob_sha1(path) == sibling.blob_id
        if not ok:
            path.unlink()
            raise WeightsError(f"{name} does not match the hub's checksum (damaged download); it was deleted, "
                               "run the same command again.")
        checked[name] = {"sha256": sha256, "size": path.stat().st_size}
    return checked


def _write_folder(src: Path, out: Path, shards: list[str], others: list[str]) -> dict:
    files = {}
    for name in others:
        data = (src / name).read_bytes()
        if name == "config.json":
            config = json.loads(data)
            config["torch_dtype" if "torch_dtype" in config else "dtype"] = "float32"
            data = (json.dumps(config, indent=2, ensure_ascii=False) + "\n").encode()
        elif name == "model.safetensors.index.json":
            index = json.loads(data)
            index.setdefault("metadata", {})["total_size"] = sum(fp32_size(src / s, header_only=True) for s in shards)
            data = (json.dumps(index, indent=2) + "\n").encode()
        _write_bytes(out / name, data)
        files[name] = {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}
    for name in shards:
        files[name] = convert_shard(src / name, out / name)
    return dict(sorted(files.items()))


def _replace(partial: Path, dest: Path) -> None:
    old = dest.parent / f".{dest.name}.old"
    shutil.rmtree(old, ignore_errors=True)
    if dest.exists():
        dest.rename(old)
    partial.rename(dest)
    shutil.rmtree(old, ignore_errors=True)


def _read_manifest(model_dir: Path) -> dict:
    try:
        return json.loads((Path(model_dir) / MANIFEST).read_text())
    except (OSError, ValueError):
        return {}


def _revision_from_path(src: Path) -> str:
    # A hub cache folder is .../snapshots/<commit>/: the commit is the revision.
    return src.name if src.parent.name == "snapshots" else "unknown"


def _wanted(name: str) -> bool:
    return "/" not in name and any(fnmatch.fnmatch(name, p) for p in ALLOW_PATTERNS)


def _git_blob_sha1(path: Path) -> str:
    data = path.read_bytes()  # small text files only: LFS files are checked by sha256
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def _write_bytes(path: Path, data: bytes) -> None:
    path.write_bytes(data)
    os.chmod(path, 0o644)  # readable by the image's non-root user whatever the umask


def _write_text(path: Path, text: str) -> None:
    _write_bytes(path, text.encode())


def _endpoint() -> str:
    from huggingface_hub import constants

    return constants.ENDPOINT


def _first_line(exc: BaseException) -> str:
    # huggingface_hub's messages run over several lines (the url, a docs link, the server's text); the first
    # says what failed, and the tool's error stays one line.
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[0].rstrip(".") if lines else type(exc).__name__


def _gib(n: int) -> str:
    return f"{n / 2**30:.1f} GiB"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     epilog=f"Tested models: {', '.join(SUPPORTED_MODEL_IDS)}.")
    parser.add_argument("model_id", nargs="?", help=f"hub model id (default {DEFAULT_MODEL_ID}); "
                        "with --from-dir, the id recorded in the manifest")
    parser.add_argument("--revision", help="hub branch, tag or commit (default: main)")
    parser.add_argument("--from-dir", type=Path, metavar="DIR", help="convert this local model folder; no network")
    parser.add_argument("--dest", type=Path, metavar="DIR", help="output folder (default: weights/<model name>)")
    parser.add_argument("--force", action="store_true", help="replace dest when it already exists")
    parser.add_argument("--verify", type=Path, metavar="DIR", help="only check DIR against its manifest")
    parser.add_argument("--download-only", action="store_true",
                        help="download and check the hub's files into dest as they are; convert later with --from-dir")
    args = parser.parse_args(argv)
    try:
        if args.verify:
            manifest = verify(args.verify)
            print(f"{args.verify}: {manifest['model_id']}@{manifest['revision']}, {len(manifest['files'])} files OK")
            return 0
        if args.from_dir:
            dest = args.dest or default_dest(args.model_id or args.from_dir.resolve().name)
            out = convert(args.from_dir, dest, model_id=args.model_id, revision=args.revision, force=args.force)
        elif args.download_only:
            model_id = args.model_id or DEFAULT_MODEL_ID
            dest = args.dest or default_dest(model_id)
            if dest.exists() and not args.force:
                raise WeightsError(f"{dest} already exists; pass --force to download into it again.")
            out = download(model_id, args.revision, dest)
        else:
            out = fetch(args.model_id or DEFAULT_MODEL_ID, args.revision, args.dest, args.force)
    except WeightsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
