"""manifest.json: the SHA-256 and size of every artifact of a run, written last, and checked
before anything of the run is loaded."""

from __future__ import annotations

from pathlib import Path

from imgclf.infra.cache import sha256_file
from imgclf.infra.errors import UserError
from imgclf.runs.files import read_json, write_json
from imgclf.runs.names import MANIFEST, STATE


def _artifacts(run_dir: Path) -> list[Path]:
    """Every regular file of the run, hidden (temporary) files and symlinks left out."""
    return sorted(
        p
        for p in run_dir.rglob("*")
        if p.is_file()
        and not p.is_symlink()
        and p.relative_to(run_dir).as_posix() not in (MANIFEST, STATE)
        and not any(part.startswith(".") for part in p.relative_to(run_dir).parts)
    )


def write_manifest(run_dir: str | Path) -> None:
    """Write manifest.json: the SHA-256 and size of every artifact in the run directory.

    Written last, when every artifact is in place (and again after a re-export), so a model
    loaded later can be checked against what training produced (`verify_manifest`).
    """
    run_dir = Path(run_dir)
    files = {
        p.relative_to(run_dir).as_posix(): {"sha256": sha256_file(p), "size": p.stat().st_size}
        for p in _artifacts(run_dir)
    }
    write_json(run_dir / MANIFEST, {"algorithm": "sha256", "files": files})


class IntegrityError(UserError):
    """An artifact differs from what manifest.json recorded."""


def verify_manifest(run_dir: str | Path, *names: str) -> None:
    """Check the artifacts `names` (files, or folders such as `saved_model` for everything under
    them) against the run's manifest.json.

    Raises:
        IntegrityError: the manifest is missing (the run cannot be verified) or not valid JSON,
            or names the first file that is missing, unlisted or modified.
    """
    run_dir = Path(run_dir)
    manifest_path = run_dir / MANIFEST
    if not manifest_path.is_file():
        raise IntegrityError(
            f"{manifest_path} missing: this run cannot be verified, so nothing of it is loaded; "
            "re-train it (or resume it if it was interrupted)"
        )
    try:
        files = read_json(manifest_path)["files"]
    except (ValueError, KeyError, TypeError) as exc:
        raise IntegrityError(f"{manifest_path} is not a valid manifest ({exc})") from None
    for name in names:
        listed = {k: v for k, v in files.items() if k == name or k.startswith(f"{name}/")}
        if not listed:
            raise IntegrityError(
                f"{run_dir / name} is not listed in {MANIFEST}: an export that did not finish, "
                f"or a file put there by hand; export it again (imgclf-export {run_dir} "
                "--format ...) or remove it"
            )
        # _artifacts of a plain file is empty, so only folders can have unlisted extras.
        on_disk = {p.relative_to(run_dir).as_posix() for p in _artifacts(run_dir / name)}
        extra = sorted(on_disk - set(listed))
        if extra:
            raise IntegrityError(
                f"{run_dir / extra[0]} is not listed in {MANIFEST}: it was added after training; "
                "refusing to load. Remove it, or re-export the run"
            )
        for rel, entry in listed.items():
            _check_file(run_dir / rel, entry)


def _check_file(path: Path, entry: dict) -> None:
    """One listed file against its manifest entry (IntegrityError naming it and the fix)."""
    if not path.is_file():
        what = "not a file" if path.exists() else "missing"
        raise IntegrityError(
            f"{path} is {what} (listed in {MANIFEST}); refusing to load. Restore it, or "
            "re-train the run"
        )
    try:
        same = path.stat().st_size == entry.get("size") and sha256_file(path) == entry.get("sha256")
    except OSError as exc:  # unreadable (permissions, I/O): cannot be verified, so not trusted
        raise IntegrityError(
            f"{path} cannot be read ({exc.strerror or exc}); refusing to load. Fix its "
            "permissions or restore it"
        ) from None
    if not same:
        raise IntegrityError(
            f"{path} does not match its SHA-256 in {MANIFEST} (modified after "
            "training); refusing to load it. Restore the file, or re-train or re-export"
        )


def verify_all(run_dir: str | Path, *replaced: str) -> None:
    """Check every file the manifest lists, except `replaced` (what an export is about to
    write: re-writing the manifest must never bless a file changed since it was written).

    Raises IntegrityError like `verify_manifest`."""
    run_dir = Path(run_dir)
    verify_manifest(run_dir)  # the manifest itself exists and parses
    files = read_json(run_dir / MANIFEST)["files"]
    for rel, entry in files.items():
        if not any(rel == name or rel.startswith(f"{name}/") for name in replaced):
            _check_file(run_dir / rel, entry)
