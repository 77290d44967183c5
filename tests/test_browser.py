"""The app in a real browser: `imgclf-app` as a server (127.0.0.1, or 0.0.0.0) against a fixture
runs root, driven by Debian's Chromium through Playwright (no browser download)."""

from __future__ import annotations

from pathlib import Path

import pytest
from browser_kit import browser_page, go_to, hue, hue_gap, listening_addresses, serve, settled

from imgclf import runs

PAGES = ("Data", "Training curves", "Evaluation", "Compare", "Lessons", "Model", "Train")


@pytest.fixture
def server(app_runs: Path, tmp_path: Path):
    """The app served by `imgclf-app --address 0.0.0.0` (every interface, as an operator
    would put it on a network) on a free port; stopped at the end whatever happens."""
    from imgclf.infra.console import is_noise

    with serve(app_runs, tmp_path, address="0.0.0.0") as (url, port):
        assert listening_addresses(port) == {"0.0.0.0"}
        yield url
    # The server loaded TensorFlow (Classify): its C++ start-up lines stayed off the terminal.
    log = (tmp_path / f"streamlit-{port}.log").read_bytes().splitlines()
    assert not [line for line in log if is_noise(line)], log[:20]


@pytest.mark.slow
def test_upload_every_page_a_zip_and_the_data_page_in_a_real_browser(
    server: str, app_runs: Path, tmp_path: Path
):
    """One server and one browser for the read-only pages: an upload shows the label, every
    page renders, a zip is classified in one go, and the Data page shows the run's data."""
    from playwright.sync_api import expect

    from imgclf.predict.predictor import Predictor
    from imgclf.ui import catalog

    entry = catalog.list_runs(app_runs)[0]
    labels = runs.read_labels(entry.path)
    sample = sorted((entry.path / runs.SAMPLES).glob("*.png"))[0]
    expected, _ = Predictor.from_path(entry.path).predict_files([sample], k=3)
    with browser_page() as page:
        page.goto(server)
        # The page paints (title, uploader) while the model is still loading, and says so.
        expect(page.get_by_role("heading", name="Classify")).to_be_visible()
        expect(page.get_by_text("Loading the model")).to_be_visible()
        page.screenshot(path=tmp_path / "classify-loading.png")
        expect(page.get_by_text("Upload one or more images")).to_be_visible()
        page.screenshot(path=tmp_path / "classify-empty.png")
        page.locator("input[type=file]").first.set_input_files(str(sample))
        result = page.get_by_text(" · p = ").first
        expect(result).to_be_visible()
        shown = result.inner_text().split(" · ")[0].strip()
        assert shown in labels and shown == expected[0].label
        settled(page)
        page.screenshot(path=tmp_path / "classify.png")
        # Every top-k bar is labelled (Vega used to drop overlapping labels: 2 of 3 shown).
        # Vega keeps a label it prunes for overlap in the SVG, with opacity 0.
        labels_drawn = page.get_by_test_id("stVegaLiteChart").first.locator(
            ".role-axis-label text:not([opacity='0'])"
        )
        expect(labels_drawn.first).to_be_attached()  # Vega draws after load
        texts = set(labels_drawn.all_text_contents())
        assert set(expected[0].labels) <= texts, (expected[0].labels, texts)
        # The selected run's whole label (name, family, accuracy, date) is readable without
        # opening the selector, which cuts it off.
        expect(page.get_by_text(f"Selected: {entry.label}")).to_be_visible()
        for name in PAGES:
            go_to(page, name, "Compare runs" if name == "Compare" else name)
            if name == "Compare":  # two runs: two distinct colours, names in full
                legend = page.get_by_test_id("stVegaLiteChart").first
                symbols = legend.locator(".role-legend-symbol path")
                expect(symbols.first).to_be_attached()
                fills = [symbols.nth(i).get_attribute("fill") for i in range(symbols.count())]
                hues = [hue(f) for f in fills]
                assert len(hues) == 2 and hue_gap(*hues) > 0.1, fills  # not two blues
                names = set(legend.locator(".role-legend-label text").all_text_contents())
                assert names == {e.name for e in catalog.list_runs(app_runs)[:2]}, names
            page.screenshot(path=tmp_path / f"{name.lower().replace(' ', '-')}.png")
        # Back on Classify the upload is still there (kept per run until cleared).
        go_to(page, "Classify")
        expect(page.get_by_text(" · p = ").first).to_be_visible()
        assert page.get_by_text(" · p = ").first.inner_text().startswith(shown)
        expect(page.get_by_text(sample.name).first).to_be_visible()
        page.screenshot(path=tmp_path / "classify-kept.png")
        page.get_by_role("button", name="Clear images").click()
        settled(page)
        expect(page.get_by_text(" · p = ")).to_have_count(0)
        expect(page.get_by_text("Upload one or more images")).to_be_visible()
        _batch_zip(page, entry.path, tmp_path)
        _data_page(page, entry.path, tmp_path)
    assert len(list(tmp_path.glob("*.png"))) == 5 + len(PAGES) + 3


def _batch_zip(page, run: Path, tmp_path: Path) -> None:
    """A zip of the run's samples classified in one go; the CSV downloaded is imgclf-predict's
    (one row per rank) for every image."""
    import csv
    import zipfile

    from playwright.sync_api import expect

    samples = sorted((run / runs.SAMPLES).glob("*.png"))
    with zipfile.ZipFile(tmp_path / "batch.zip", "w") as zf:
        for path in samples:
            zf.write(path, f"set/{path.name}")
        zf.writestr("set/broken.png", b"not an image")
    page.get_by_text("Classify a whole folder or a zip of images").click()
    zipped = page.get_by_test_id("stFileUploader").filter(has_text="Zip of images")
    zipped.locator("input[type=file]").set_input_files(str(tmp_path / "batch.zip"))
    settled(page)
    page.get_by_role("button", name="Classify all").click()
    summary = page.get_by_text(f"{len(samples)} images classified from batch.zip")
    expect(summary).to_be_visible()
    expect(page.get_by_text("set/broken.png: not an image")).to_be_visible()
    settled(page)
    page.screenshot(path=tmp_path / "classify-batch.png", full_page=True)
    with page.expect_download() as download:
        page.get_by_role("button", name="Download CSV").click()
    rows = list(csv.DictReader(download.value.path().open()))
    assert {r["image"] for r in rows} == {f"set/{p.name}" for p in samples}
    assert len(rows) == 3 * len(samples) and {r["rank"] for r in rows} == {"1", "2", "3"}


def _table_cells(page) -> dict[str, list[str]]:
    """The counts table as the browser shows it: row header -> its cells' texts."""
    rows = page.get_by_test_id("stTable").first.locator("tbody tr")
    shown = {}
    for i in range(rows.count()):
        row = rows.nth(i)
        shown[row.locator("th").first.inner_text().strip()] = [
            t.strip() for t in row.locator("td").all_inner_texts()
        ]
    return shown


def _loaded(image) -> bool:
    """True once the browser has decoded the <img> (a broken one has naturalWidth 0)."""
    return image.evaluate("e => e.complete && e.naturalWidth > 0")


def _data_page(page, run: Path, tmp_path: Path) -> None:
    """The Data page of `run` (selected): the counts table is the run's data report, the
    splits have distinct colours, every class shows decoded samples, and the configured
    augmentation is previewed on request."""
    from playwright.sync_api import expect

    report = runs.read_json(run / runs.DATA_REPORT)
    classes = report["classes"]
    go_to(page, "Data")
    # The numbers in the page are the report's, per class and split, and the totals.
    expect(page.get_by_test_id("stTable").first).to_be_visible()
    shown = _table_cells(page)
    expected = {
        name: [str(report["counts"][s][name]) for s in ("train", "val", "test")]
        + [str(sum(report["counts"][s][name] for s in report["counts"]))]
        for name in classes
    }
    expected["all classes"] = [str(report["totals"][s]) for s in ("train", "val", "test")]
    expected["all classes"].append(str(sum(report["totals"].values())))
    assert shown == expected
    # The chart colours the splits with three distinct hues (category10, not blues).
    chart = page.get_by_test_id("stVegaLiteChart").first
    symbols = chart.locator(".role-legend-symbol path")
    expect(symbols.first).to_be_attached()
    labels = chart.locator(".role-legend-label text").all_text_contents()
    assert labels == ["train", "val", "test"], labels
    hues = [hue(symbols.nth(i).get_attribute("fill")) for i in range(symbols.count())]
    assert min(hue_gap(a, b) for a in hues for b in hues if a is not b) > 0.05, hues
    page.screenshot(path=tmp_path / "data-counts.png")
    # Every class has its row of sample pictures, decoded and shown by the browser.
    for i, name in enumerate(classes):
        row = page.locator(f".st-key-data-sample-{i}")
        expect(row.get_by_text(name, exact=False).first).to_be_visible()
        images = row.locator("img")
        expect(images.first).to_be_visible()
        assert images.count() >= 3, (name, images.count())
        assert images.first.get_attribute("alt") == f"{name} sample 1"
        assert all(_loaded(images.nth(n)) for n in range(images.count())), name
    page.locator(f".st-key-data-sample-{len(classes) - 1}").scroll_into_view_if_needed()
    page.screenshot(path=tmp_path / "data-samples.png")
    # The configured augmentation on real training images, on request.
    expect(page.get_by_alt_text("augmentation preview")).to_have_count(0)
    page.get_by_role("button", name="Preview augmentation").click()
    preview = page.get_by_alt_text("augmentation preview")
    expect(preview).to_be_visible()
    settled(page)
    assert _loaded(preview)
    width = preview.evaluate("e => e.naturalWidth")
    assert width > 6 * 32, width  # a grid: the original and five augmented versions
    preview.scroll_into_view_if_needed()
    page.screenshot(path=tmp_path / "data-augmentation.png")
    # Served on every interface with no IMGCLF_DATA_ROOTS: a folder of the server is refused.
    page.get_by_text("A folder or CSV (before training)").click()
    path_box = page.get_by_label("Folder or CSV file on the server")
    path_box.fill(str(run.parent))
    path_box.press("Enter")
    expect(page.get_by_text("reading folders of the server is switched off")).to_be_visible()


@pytest.mark.slow
def test_the_builder_makes_a_dataset_and_the_lessons_page_trains_a_pair_in_a_browser(
    tmp_path: Path,
):
    """One server (from an empty runs folder) and one browser for the pages that make datasets
    or train real children: a dataset built on the Train page and handed to its form, then the
    Activations lesson's pair. The builder goes first: after a job has ended, the Train page's
    progress fragment reruns the whole app once, within a second of the first visit, to list
    the new run, and that rerun can land between typing the dataset's name and pressing Add
    class (it did once in a clean clone: the class went into "my-dataset"). (A builder-made
    dataset trained by a real child from the Train page's form: test_app.py's
    test_train_page_starts_a_job_and_the_new_run_is_selected.)"""
    from imgclf import lessons

    lesson = next(item for item in lessons.lessons() if item.key == "activations")
    data = tmp_path / "data"
    root = tmp_path / "runs"
    with (
        serve(root, tmp_path, IMGCLF_DATA=str(data)) as (url, port),
        browser_page(height=1400) as page,
    ):
        # imgclf-app, started outside the repository, listens on this machine only.
        assert listening_addresses(port) == {"127.0.0.1"}
        page.goto(url)
        _a_dataset_built_in_the_browser_lands_on_disk_and_fills_the_form(page, data, tmp_path)
        _the_data_page_review_removes_a_blank_frame_and_undoes_it(page, data, tmp_path)
        _lessons_train_a_pair_and_overlay_it(page, lesson, tmp_path)
        _classify_adds_an_image_to_a_dataset(page, data, tmp_path)
    trained = {runs.read_config(e.path)["name"] for e in _complete(root)}
    assert trained == {r.run_name for r in lesson.recipes}


def _the_data_page_review_removes_a_blank_frame_and_undoes_it(
    page, data: Path, tmp_path: Path
) -> None:
    """The Data page's Review on a folder under the data root: the audit finds a planted blank
    frame, Remove moves it to the dataset's quarantine, Undo puts it back."""
    import numpy as np
    from conftest import write_folder_dataset
    from PIL import Image
    from playwright.sync_api import expect

    from imgclf.data import review

    folder = write_folder_dataset(data / "shapes", per_class=20)
    blank = folder / "hstripes" / "blank.png"
    Image.fromarray(np.full((32, 32, 3), 9, np.uint8)).save(blank)
    original = blank.read_bytes()
    go_to(page, "Data")
    page.get_by_text("A folder or CSV (before training)").click()
    path_box = page.get_by_label("Folder or CSV file on the server")
    path_box.fill(str(folder))
    path_box.press("Enter")
    settled(page)
    page.get_by_role("button", name="Audit this folder").click()
    finding = page.locator(".st-key-review-outliers-0")
    expect(finding.get_by_text("hstripes/blank.png: near-constant")).to_be_visible()
    settled(page)
    page.screenshot(path=tmp_path / "data-review.png", full_page=True)
    finding.get_by_role("button", name="Remove").click()
    expect(page.get_by_text("remove: hstripes/blank.png")).to_be_visible()
    quarantined = folder / review.QUARANTINE / "hstripes" / "blank.png"
    assert quarantined.read_bytes() == original and not blank.exists()
    settled(page)
    page.get_by_role("button", name="Undo: remove hstripes/blank.png").click()
    expect(page.get_by_text("undone: remove hstripes/blank.png")).to_be_visible()
    assert blank.read_bytes() == original and not quarantined.exists()


def _classify_adds_an_image_to_a_dataset(page, data: Path, tmp_path: Path) -> None:
    """Classify → dataset: an uploaded image is added to a builder dataset under a new class."""
    from playwright.sync_api import expect

    photo = tmp_path / "src" / "circle" / "circle 0.png"
    go_to(page, "Classify")
    uploader = page.get_by_test_id("stFileUploader").first
    uploader.locator("input[type=file]").set_input_files(str(photo))
    expect(page.get_by_text(" · p = ").first).to_be_visible()
    settled(page)
    offer = page.get_by_text("Add to a dataset").first
    if page.get_by_label("Class (existing or new)").count() == 0:  # closed: a confident answer
        offer.click()
    dataset = page.get_by_label("Dataset", exact=True)
    dataset.fill("grown")
    dataset.press("Enter")
    settled(page)
    kind = page.get_by_label("Class (existing or new)")
    kind.fill("new shapes")
    kind.press("Enter")
    settled(page)
    page.get_by_role("button", name="Add", exact=True).click()
    expect(page.get_by_text("Added as new_shapes/")).to_be_visible()
    (saved,) = (data / "grown" / "new_shapes").iterdir()
    assert saved.read_bytes() == photo.read_bytes()


def _lessons_train_a_pair_and_overlay_it(page, lesson, tmp_path: Path) -> None:
    """The Activations lesson's two recipes are queued by one button, trained one at a time,
    and shown side by side with the gradient ratio the lesson is about."""
    from playwright.sync_api import expect

    stems = [r.stem for r in lesson.recipes]
    go_to(page, "Lessons")
    expect(page.get_by_text(lesson.recipes[0].explanation[:40]).first).to_be_visible()
    page.screenshot(path=tmp_path / "lessons-untrained.png")
    epochs = page.get_by_label("Epochs", exact=True)
    epochs.fill("2")  # a quick look: the gradient ratio is measured at initialisation
    epochs.press("Enter")
    settled(page)
    page.get_by_role("button", name="Train the missing runs").click()
    expect(page.get_by_text("Queued next:")).to_be_visible()
    page.screenshot(path=tmp_path / "lessons-queued.png")
    table = page.get_by_test_id("stTable").nth(1)  # the runs' table, once both exist
    expect(table).to_be_visible()
    settled(page)
    legend = page.get_by_test_id("stVegaLiteChart").first.locator(".role-legend-label text")
    expect(legend.first).to_be_attached()
    assert set(legend.all_text_contents()) == set(stems)  # the pair, overlaid
    rows = {}
    for row in table.locator("tbody tr").all():
        cells = row.locator("th, td").all_inner_texts()
        rows[cells[0]] = cells
    assert set(rows) == set(stems)
    header = table.locator("thead th").all_inner_texts()
    col = next(i for i, h in enumerate(header) if h.startswith("grad ratio"))
    ratio = {s: float(rows[s][col].rstrip("×").replace(",", "")) for s in stems}
    # What the lesson shows: sigmoid's gradient vanishes towards the input, ReLU + He's not.
    assert ratio["activations_sigmoid"] > 1000 > 10 > ratio["activations_relu"], ratio
    page.screenshot(path=tmp_path / "lessons-overlay.png", full_page=True)


def _a_dataset_built_in_the_browser_lands_on_disk_and_fills_the_form(
    page, data: Path, tmp_path: Path
) -> None:
    """Teachable-Machine style: classes made by name, images added by upload and by a zip,
    saved as a folder dataset under `data`, and handed to the training form of the same page."""
    import zipfile

    import numpy as np
    from conftest import make_image
    from PIL import Image
    from playwright.sync_api import expect

    rng = np.random.default_rng(0)
    files = []
    for cls in ("circle", "vstripes"):
        for i in range(6):
            path = tmp_path / "src" / cls / f"{cls} {i}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(make_image(cls, rng)).save(path)
            files.append(path)
    with zipfile.ZipFile(tmp_path / "stripes.zip", "w") as zf:
        for path in files[6:]:
            zf.write(path, f"vstripes/{path.name}")
    go_to(page, "Train")
    name = page.get_by_label("Dataset name")
    name.fill("web shapes")
    name.press("Enter")
    settled(page)
    new_class = page.get_by_label("New class")
    new_class.fill("circle")  # the new class is the one added to
    new_class.press("Enter")  # commit the text before the button reads it
    settled(page)
    page.get_by_role("button", name="Add class").click()
    settled(page)
    uploader = page.get_by_test_id("stFileUploader").filter(has_text="Images for")
    expect(uploader).to_be_visible()
    uploader.locator("input[type=file]").set_input_files([str(p) for p in files[:6]])
    expect(page.get_by_text("Added 6 image(s).")).to_be_visible()
    settled(page)
    # The zip makes its own class (its folder).
    zipped = page.get_by_test_id("stFileUploader").filter(has_text="zip of class folders")
    zipped.locator("input[type=file]").set_input_files(str(tmp_path / "stripes.zip"))
    # "Added 6 image(s)." is already on the page from the first upload, so wait for what
    # only the zip brings: a second class, which is what shows the "Use this dataset" button.
    use = page.get_by_role("button", name="Use this dataset in the form below")
    expect(use).to_be_visible()
    settled(page)
    page.screenshot(path=tmp_path / "builder.png", full_page=True)
    root = data / "web_shapes"
    on_disk = {d.name: sorted(p.name for p in d.iterdir()) for d in root.iterdir()}
    assert on_disk == {
        "circle": [f"circle_{i}.png" for i in range(6)],
        "vstripes": [f"vstripes_{i}.png" for i in range(6)],
    }  # one folder per class, names sanitised
    use.click()
    settled(page)
    folder = page.get_by_role("textbox", name="Folder (for source folder)")
    expect(folder).to_have_value(str(root))
    expect(page.get_by_role("textbox", name="Run name")).to_have_value("web_shapes")
    page.screenshot(path=tmp_path / "builder-form.png", full_page=True)


def _complete(root: Path):
    from imgclf.ui import catalog

    return [e for e in catalog.list_runs(root) if e.complete]
