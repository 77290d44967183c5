"""The dataset builder (`imgclf.data.builder`) and the Train page's "Build a dataset" section:
images added by name, upload or zip land in a folder dataset training reads."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np
import pytest
from conftest import make_image, refuse_to_read, zip_bytes
from PIL import Image
from streamlit.testing.v1 import AppTest

from imgclf.data.builder import DatasetBuilder, sanitise
from imgclf.data.folder import list_folder
from imgclf.data.roots import DATA_ENV
from imgclf.infra.errors import UserError
from imgclf.ui import catalog

APP = str(Path(__file__).resolve().parents[1] / "app.py")


def _png(cls: str, seed: int, fmt: str = "PNG") -> bytes:
    out = io.BytesIO()
    Image.fromarray(make_image(cls, np.random.default_rng(seed))).save(out, fmt)
    return out.getvalue()


def test_names_are_sanitised_to_one_safe_folder_name():
    assert sanitise("  Golden retriever! ") == "Golden_retriever"
    assert sanitise("../../etc/passwd") == "etc_passwd"
    assert sanitise("Ça va") == "Ça_va"  # letters of any script stay
    assert sanitise("__MACOSX") == "MACOSX"  # not the archive tool's folder any more
    for bad in ("", "...", "///", "train", "VAL"):
        with pytest.raises(UserError):
            sanitise(bad)
    for device in ("CON", "nul", "aux", "com1", "LPT9", "nul.txt"):  # Windows' device names
        with pytest.raises(UserError, match="Windows device name"):
            sanitise(device)
    assert sanitise("console") == "console" and sanitise("com10") == "com10"


def test_images_added_behind_the_builders_back_are_still_found_as_duplicates(tmp_path: Path):
    """The duplicate index is kept up to date by `add` (no walk of the dataset per image, which
    made a 1,000-image zip quadratic) and read again when a folder changed under it."""
    builder = DatasetBuilder(tmp_path / "pets")
    assert builder.add("cat", "a.png", _png("circle", 0)).status == "added"
    (tmp_path / "pets" / "dog").mkdir()
    (tmp_path / "pets" / "dog" / "b.png").write_bytes(_png("circle", 1))  # not through add
    again = builder.add("cat", "copy.png", _png("circle", 1))
    assert (again.status, again.path) == ("duplicate", "dog/b.png")


def test_images_are_checked_deduplicated_and_saved_where_training_reads(tmp_path: Path):
    builder = DatasetBuilder(tmp_path / "pets")
    assert builder.add_class("Cat s") == "Cat_s" and builder.add_class("cat_S") == "Cat_s"
    first = builder.add("Cat s", "../a b.PNG", _png("circle", 0))
    assert (first.status, first.path) == ("added", "Cat_s/a_b.png")
    again = builder.add("dog", "copy.png", _png("circle", 0))  # same bytes, other class
    assert (again.status, again.path) == ("duplicate", "Cat_s/a_b.png")
    other = builder.add("Cat s", "a b.png", _png("circle", 1))  # same name, other bytes
    assert other.status == "added" and other.path.startswith("Cat_s/a_b-")
    jpeg = builder.add("dog", "camera", _png("vstripes", 2, "JPEG"))  # no extension: by bytes
    assert jpeg.path == "dog/camera.jpg"
    bad = builder.add("dog", "x.png", b"not an image")
    assert bad.status == "refused" and bad.reason == "not an image"
    assert builder.classes() == {"Cat_s": 2, "dog": 1}
    entries, classes, ignored, _ = list_folder(builder.root)
    assert classes == ["Cat_s", "dog"] and len(entries) == 3 and not ignored
    assert not list(builder.root.rglob(".*"))  # no temporary left behind


def test_a_zip_of_class_folders_is_added_with_one_top_folder_stripped(tmp_path: Path):
    builder = DatasetBuilder(tmp_path / "shapes")
    members = {
        "shapes/circle/1.png": _png("circle", 0),
        "shapes/circle/2.png": _png("circle", 1),
        "shapes/vstripes/1.png": _png("vstripes", 2),
        "shapes/vstripes/bad.png": b"garbage",
        "shapes/notes.txt": b"x",
    }
    results = builder.add_zip(zip_bytes(members))
    outcome = {r.source: r.status for r in results}
    assert outcome == {
        "shapes/circle/1.png": "added",
        "shapes/circle/2.png": "added",
        "shapes/vstripes/1.png": "added",
        "shapes/vstripes/bad.png": "refused",
    }
    assert builder.classes() == {"circle": 2, "vstripes": 1}
    loose = builder.add_zip(
        zip_bytes({"loose.png": _png("circle", 5), "train/x.png": _png("circle", 6)})
    )
    assert [r.reason for r in loose] == [
        "not inside a class folder",
        "class name 'train' is reserved (a train/val/test split folder): choose another name",
    ]
    with pytest.raises(UserError, match="not a readable zip"):
        builder.add_zip(b"no zip here", "x.zip")


def test_zip_slip_and_link_members_are_named_and_leave_nothing_behind(tmp_path: Path):
    """Members whose path climbs out of the folder (`..`) were counted as skipped but never
    named; a symbolic-link member left an empty class folder. Now each is named with its
    reason, and a refused image creates no class folder."""
    import io
    import zipfile

    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as zf:
        zf.writestr("circle/1.png", _png("circle", 0))
        zf.writestr("../../evil/x.png", _png("circle", 1))
        link = zipfile.ZipInfo("links/passwd.png")
        link.external_attr = 0o120777 << 16  # a Unix symbolic link to /etc/passwd
        zf.writestr(link, "/etc/passwd")
        zf.writestr("broken/x.png", b"not an image")
    builder = DatasetBuilder(tmp_path / "ds")
    reasons = {r.source: r.reason for r in builder.add_zip(out.getvalue(), "up.zip")}
    assert "zip slip" in reasons["../../evil/x.png"]
    assert reasons["links/passwd.png"] == "a symbolic link, not an image: not read"
    assert reasons["broken/x.png"] == "not an image"
    assert builder.classes() == {"circle": 1}  # no `links` or `broken` folder
    assert not (tmp_path / "evil").exists()


def _train_page(monkeypatch, runs: Path, data: Path) -> AppTest:
    monkeypatch.setenv(catalog.RUNS_ENV, str(runs))
    monkeypatch.setenv(DATA_ENV, str(data))
    at = AppTest.from_file(APP, default_timeout=120).run()
    at.sidebar.radio(key="page").set_value("Train").run()
    return at


def test_the_train_page_builds_a_dataset_and_hands_it_to_the_form(monkeypatch, tmp_path: Path):
    at = _train_page(monkeypatch, tmp_path / "runs", tmp_path / "data")
    at.text_input(key="builder_name").set_value("My shapes").run()
    for name in ("circle", "Stripes V"):
        at.text_input(key="builder_new").set_value(name).run()
        at.button(key="builder_add").click().run()
    assert not at.exception
    root = tmp_path / "data" / "My_shapes"
    assert sorted(p.name for p in root.iterdir()) == ["Stripes_V", "circle"]
    at.selectbox[1].set_value("circle").run()  # [0] is the recipe
    files = [(f"c{i}.png", _png("circle", i), "image/png") for i in range(5)]
    at.file_uploader[0].set_value([*files, ("dup.png", files[0][1], "image/png")]).run()
    assert [s.value for s in at.success] == ["Added 5 image(s)."]
    assert next(w.value for w in at.warning).startswith("dup.png: skipped, the same image")
    zipped = zip_bytes({f"Stripes_V/v{i}.png": _png("vstripes", 10 + i) for i in range(5)})
    at.file_uploader[1].set_value([("more.zip", zipped, "application/zip")]).run()
    assert not at.exception
    assert {p.name for p in (root / "Stripes_V").iterdir()} == {f"v{i}.png" for i in range(5)}
    table = at.table[0].value
    assert dict(zip(table.index, table["images"], strict=True)) == {"Stripes_V": 5, "circle": 5}
    at.button(key="builder_use").click().run()
    form = {w.label: w.value for w in [*at.selectbox, *at.text_input]}
    assert form["Data source"] == "folder" and form["Folder (for source folder)"] == str(root)
    assert form["Run name"] == "My_shapes"


def test_a_zip_added_in_steps_resumes_where_it_stopped(tmp_path: Path):
    """`iter_zip` (the page's progress bar) yields each entry as it is done; started again from
    entry k (a rerun interrupted the page) it adds only the rest, and together the two passes
    give what one `add_zip` gives."""
    members = {f"circle/c{i}.png": _png("circle", i) for i in range(4)}
    members["circle/bad.png"] = b"not an image"
    members["loose.png"] = _png("circle", 9)
    data = zip_bytes(members)
    whole = DatasetBuilder(tmp_path / "whole").add_zip(data)
    builder = DatasetBuilder(tmp_path / "steps")
    first = []
    for done, total, added in builder.iter_zip(data):
        first.append(added)
        assert total == len(members) and done == len(first)
        if done == 3:
            break  # the page's run is stopped here
    assert builder.classes() == {"circle": sum(a.status == "added" for a in first)}
    rest = [added for done, _, added in builder.iter_zip(data, start=3)]
    assert [(a.source, a.status, a.reason) for a in first + rest] == [
        (a.source, a.status, a.reason) for a in whole
    ]
    assert builder.classes() == {"circle": 4}


def test_uploads_are_saved_with_progress_on_whichever_page_the_user_went_to(
    monkeypatch, tmp_path: Path
):
    """The uploader's callback only takes the bytes; the run saves them under a progress bar.
    Uploads left unsaved (the user went to another page at once, and that click stopped the run
    after 2 of 5 images) are saved by the next run, on the other page, from the third."""
    from imgclf.data.builder import Added
    from imgclf.ui.pages.builder import LOG, PENDING

    at = _train_page(monkeypatch, tmp_path / "runs", tmp_path / "data")
    at.text_input(key="builder_new").set_value("circle").run()
    at.button(key="builder_add").click().run()
    root = tmp_path / "data" / "my-dataset"
    files = [(f"c{i}.png", _png("circle", i)) for i in range(5)]
    at.file_uploader[0].set_value([(n, b, "image/png") for n, b in files[:2]]).run()
    assert at.status[0].label == "Saved to the dataset" and at.status[0].state == "complete"
    assert at.progress[0].value == 100 and at.progress[0].text == "2 upload(s): 2 of 2"
    assert sorted(p.name for p in (root / "circle").iterdir()) == ["c0.png", "c1.png"]
    # As the interrupted run left it: all 5 taken (the log emptied), the first 2 saved.
    saved = [Added(n, "added", f"circle/{n}") for n, _ in files[:2]]
    item = {"root": str(root), "kind": "files", "source": "5 upload(s)", "cls": "circle",
            "payload": files, "done": 2, "results": saved}  # fmt: skip
    at.session_state[PENDING] = [item]
    at.session_state[LOG] = []
    at.sidebar.radio(key="page").set_value("Compare").run()
    assert not at.exception
    assert at.progress[0].text == "5 upload(s): 5 of 5"
    assert sorted(p.name for p in (root / "circle").iterdir()) == [f"c{i}.png" for i in range(5)]
    assert not at.session_state[PENDING]
    at.sidebar.radio(key="page").set_value("Train").run()
    assert [s.value for s in at.success] == ["Added 5 image(s)."]
    assert not at.warning  # none of the 5 was saved twice (a duplicate)


def test_a_zip_bomb_member_is_refused_before_it_is_decompressed():
    from imgclf import archives

    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("bomb/zeros.bmp", b"\0" * (11 * 2**20))  # 11 MB of zeros: ~11 kB stored
        zf.writestr("ok/a.png", _png("circle", 0))
    archive = archives.open_zip(out.getvalue())
    listing = archives.list_images(archive)
    assert listing.images == ["ok/a.png"]
    ((name, reason),) = listing.failures
    assert name == "bomb/zeros.bmp" and "decompresses" in reason


def test_a_folder_the_builder_cannot_read_is_named(tmp_path: Path, monkeypatch):
    builder = DatasetBuilder(tmp_path / "pets")
    builder.add("cat", "a.png", _png("circle", 0))
    (builder.root / "cat" / "old").mkdir()
    refuse_to_read(monkeypatch, builder.root / "cat" / "old")
    assert builder.classes() == {"cat": 1}
    assert builder.unreadable == [
        (builder.root / "cat" / "old", "folder cannot be read (Permission denied)")
    ]


def test_names_in_the_builders_messages_show_as_typed_not_as_markdown():
    """Streamlit renders st.error and st.warning as Markdown: a file named like a link or
    in asterisks would have become a link or bold text in the builder's messages."""
    from imgclf.ui.text import plain

    for name in ("[x](https://example.com).png", "**bold**.png", "a_b_c.png", "$x$", ":red[x]"):
        escaped = plain(name)
        assert escaped.replace("\\", "") == name
        assert all(escaped[i - 1] == "\\" for i, c in enumerate(escaped) if c in "[]*_$:")
    assert plain("# 1. x") == "\\# 1. x" and plain("1. x") == "1\\. x"  # headings, lists


def test_a_full_disk_while_adding_a_zip_keeps_and_lists_what_was_added(tmp_path: Path, monkeypatch):
    """The disk fills after 3 images (ENOSPC from the atomic write, injected as a full tmpfs
    gives it; checked by hand on a 600 KB tmpfs): the 3 are saved and listed, the 4th says
    `not saved (No space left on device)`, the rest are counted as not tried, nothing raises."""
    import errno
    import io
    import zipfile

    from imgclf.data import builder as module

    real, written = module.write_bytes, []

    def fills_up(path, data):
        if len(written) == 3:
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        real(path, data)
        written.append(path)

    monkeypatch.setattr(module, "write_bytes", fills_up)
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as zf:
        for i in range(8):
            zf.writestr(f"{'circle' if i % 2 else 'vstripes'}/{i}.png", _png("circle", i))
    results = DatasetBuilder(tmp_path / "ds").add_zip(out.getvalue(), "shapes.zip")
    assert [r.status for r in results[:3]] == ["added"] * 3 and all(p.exists() for p in written)
    assert results[3].reason == "not saved (No space left on device)"
    assert results[4:] == [module.Added("shapes.zip", "refused", reason="4 more not tried")]


def test_zip_names_without_the_utf8_flag_are_read_in_their_real_encoding(tmp_path: Path):
    """A zip made on Japanese Windows stores `ねこ` in cp932 without the UTF-8 flag; zipfile
    reads it as cp437 (`é╦é▒`), which made a garbled class. Names that are valid UTF-8
    (tools that omit the flag) or cp932 are read as such; flagged names are left alone."""
    import io
    import zipfile

    from imgclf import archives

    def unflagged(name: str, encoding: str) -> bytes:
        """A one-member zip whose name's bytes are `encoding`, the UTF-8 flag unset."""
        raw = name.encode(encoding)
        out = io.BytesIO()
        with zipfile.ZipFile(out, "w") as zf:  # an ASCII placeholder name: no flag is set
            zf.writestr(zipfile.ZipInfo("x" * len(raw)), _png("circle", 0))
        return out.getvalue().replace(b"x" * len(raw), raw)  # local header and directory

    for name, encoding in (("ねこ/1.png", "cp932"), ("Café/1.png", "utf-8")):
        archive = zipfile.ZipFile(io.BytesIO(unflagged(name, encoding)))
        (member,) = archive.namelist()
        assert not archive.getinfo(member).flag_bits & 0x800 and member != name
        assert archives.member_name(member, archive) == name
    builder = DatasetBuilder(tmp_path / "ds")
    results = builder.add_zip(unflagged("ねこ/1.png", "cp932"), "cats.zip")
    assert [r.status for r in results] == ["added"] and builder.classes() == {"ねこ": 1}


def test_an_upload_the_disk_refuses_is_listed_and_the_app_goes_on(monkeypatch, tmp_path: Path):
    """A fault other than a bad name (here a file named like the class, so the class folder
    cannot be made: FileExistsError) was raised from the top of every page, every run, since
    the upload stayed first in the queue. Now it is refused with the reason and dropped."""
    from imgclf.ui.pages.builder import LOG, PENDING

    at = _train_page(monkeypatch, tmp_path / "runs", tmp_path / "data")
    root = tmp_path / "data" / "my-dataset"
    root.mkdir(parents=True)
    (root / "cat").write_text("not a folder")
    item = {"root": str(root), "kind": "files", "source": "1 upload(s)", "cls": "cat",
            "payload": [("a.png", _png("circle", 0))], "done": 0, "results": []}  # fmt: skip
    at.session_state[PENDING] = [item]
    at.run()
    assert not at.exception
    ((added),) = at.session_state[LOG]
    assert added.status == "refused" and added.reason.startswith("not saved (FileExistsError")
    assert not at.session_state[PENDING]
    at.sidebar.radio(key="page").set_value("Compare").run()
    assert not at.exception
