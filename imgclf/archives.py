"""Zip archives of images, as the app receives them (a folder zipped for batch classification,
or class folders zipped for the dataset builder): which members are images, under what names,
read with the same limits as a file on disk. Reading is `zipfile` (the standard library).

A member is listed when its extension is an image extension (`formats.is_image_name`, as a
folder is listed); hidden names, macOS's `__MACOSX/` resource forks and folders are left out
and counted. A member whose path climbs out of its folder (`..`: "zip slip") or that is a symbolic
link is named with its reason and not read; a leading `/` is dropped (the name is read as
relative: nothing is ever unpacked to the member's own path). A member larger than
`images.MAX_FILE_BYTES` once decompressed, an encrypted one or one whose data is corrupt is
reported with its reason, and the others are still read. A zip may hold at most `MAX_MEMBERS`
images and `MAX_TOTAL_BYTES` of them, and a large member that decompresses more than
`MAX_RATIO` times is refused (a zip bomb is refused before anything is decompressed). Names
stored without the zip's UTF-8 flag are read in their real encoding (`decoded_name`).
"""

from __future__ import annotations

import io
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import PurePosixPath

from imgclf.formats import is_image_name
from imgclf.images import MAX_FILE_BYTES
from imgclf.infra.errors import UserError

MAX_MEMBERS = 100_000
MAX_TOTAL_BYTES = 2 * 2**30  # decompressed, all images together
# A member over 10 MB that decompresses to more than 100x its stored size is refused: image
# formats are compressed already (even BMP and TIFF rarely shrink 100x), a zip bomb is not.
MAX_RATIO, RATIO_FROM = 100, 10 * 2**20


@dataclass
class ZipListing:
    """What a zip holds: image members (name inside the zip, normalised to `a/b.png`), members
    left out (not images), and (member, reason) for images that cannot be read."""

    images: list[str] = field(default_factory=list)
    skipped: int = 0
    failures: list[tuple[str, str]] = field(default_factory=list)


def _clean(name: str) -> PurePosixPath | None:
    """The member's path without a leading `/` or `..` parts; None for hidden or macOS files."""
    parts = [p for p in PurePosixPath(name.replace("\\", "/")).parts if p not in ("/", "", ".")]
    if not parts or ".." in parts or parts[0] == "__MACOSX":
        return None
    if any(p.startswith(".") for p in parts):
        return None
    return PurePosixPath(*parts)


def _escapes(name: str) -> str:
    """Why the member's path would leave the folder it is unpacked in ("zip slip"), or ""."""
    if ".." in name.replace("\\", "/").split("/"):
        return "a path with .. leaving the zip's folder (zip slip): not read"
    return ""


def open_zip(data: bytes, name: str = "upload.zip") -> zipfile.ZipFile:
    """The archive in `data`; UserError (one line) when it is not a readable zip."""
    try:
        return zipfile.ZipFile(io.BytesIO(data))
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise UserError(f"{name}: not a readable zip file ({exc}); zip the folder again") from None


def list_images(archive: zipfile.ZipFile, name: str = "upload.zip") -> ZipListing:
    """The image members of `archive`, in name order (see the module's docstring). Raises
    UserError when the archive holds more than MAX_MEMBERS images or MAX_TOTAL_BYTES."""
    listing = ZipListing()
    total = 0
    for info in sorted(archive.infolist(), key=lambda i: i.filename):
        if info.is_dir():
            continue
        escapes = _escapes(info.filename)
        if escapes:  # named, never silently dropped: the sender may have meant harm
            listing.failures.append((info.filename, escapes))
            continue
        clean = _clean(info.filename)
        if clean is None or not is_image_name(clean.name):
            listing.skipped += 1
            continue
        if (info.external_attr >> 16) & 0o170000 == 0o120000:  # a symbolic link (Unix zips)
            listing.failures.append((str(clean), "a symbolic link, not an image: not read"))
            continue
        if info.flag_bits & 0x1:
            listing.failures.append((str(clean), "encrypted zip member"))
            continue
        if info.file_size > MAX_FILE_BYTES:
            limit = MAX_FILE_BYTES // 2**20
            listing.failures.append((str(clean), f"file larger than {limit} MB"))
            continue
        if info.file_size > RATIO_FROM and info.file_size > MAX_RATIO * max(info.compress_size, 1):
            ratio = info.file_size / max(info.compress_size, 1)
            listing.failures.append((str(clean), f"decompresses {ratio:.0f}x: not an image"))
            continue
        total += info.file_size
        listing.images.append(info.filename)
    if len(listing.images) > MAX_MEMBERS or total > MAX_TOTAL_BYTES:
        raise UserError(
            f"{name}: {len(listing.images)} images, {total / 2**30:.1f} GB decompressed; at most "
            f"{MAX_MEMBERS} images and {MAX_TOTAL_BYTES // 2**30} GB per zip: split it"
        )
    return listing


def read_member(archive: zipfile.ZipFile, member: str) -> bytes | str:
    """The member's bytes (at most MAX_FILE_BYTES are decompressed), or the reason it cannot be
    read."""
    try:
        with archive.open(member) as fh:
            data = fh.read(MAX_FILE_BYTES + 1)
    except (zipfile.BadZipFile, OSError, RuntimeError, ValueError, EOFError) as exc:
        return f"unreadable zip member ({exc})"
    if len(data) > MAX_FILE_BYTES:  # the header lied about its size
        return f"file larger than {MAX_FILE_BYTES // 2**20} MB"
    return data


def member_name(member: str, archive: zipfile.ZipFile | None = None) -> str:
    """The name shown for a member: its cleaned path inside the zip; with its `archive`, a
    name stored without the UTF-8 flag in its real encoding (`decoded_name`)."""
    name = member
    if archive is not None and not archive.getinfo(member).flag_bits & 0x800:
        name = decoded_name(member)
    clean = _clean(name)
    return str(clean) if clean is not None else name


def decoded_name(member: str) -> str:
    """A member name as its maker wrote it. A zip without the UTF-8 flag stores names in the
    maker's code page and `zipfile` reads them as cp437 (the zip standard's), which garbles
    UTF-8 names from tools that omit the flag and cp932 names from Japanese Windows
    (`日本` read as `ô·û{`). The raw bytes are decoded as UTF-8 when they are valid UTF-8,
    else as cp932 when they are valid cp932, else left as cp437."""
    try:
        raw = member.encode("cp437")  # what zipfile decoded: the name's own bytes
    except UnicodeEncodeError:
        return member
    if raw.isascii():
        return member
    for encoding in ("utf-8", "cp932"):
        try:
            return raw.decode(encoding)
        except UnicodeDecodeError:
            continue
    return member


def iter_images(archive: zipfile.ZipFile, listing: ZipListing) -> Iterator[tuple[str, bytes | str]]:
    """(shown name, bytes or the reason they cannot be read) for each listed image."""
    for member in listing.images:
        yield member_name(member, archive), read_member(archive, member)
