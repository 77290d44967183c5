"""The Data page in a real browser: `streamlit run app.py` on 127.0.0.1 against a fixture runs
root (one tiny run trained with augmentation on), driven by Debian's Chromium via Playwright."""

from __future__ import annotations

from pathlib import Path

import pytest
from browser_kit import browser_page, go_to, hue, hue_gap, serve, settled

from imgclf import runs


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


@pytest.mark.slow
def test_data_page_in_a_real_browser(augmented_runs: Path, tmp_path: Path):
    from playwright.sync_api import expect

    (run,) = [p for p in augmented_runs.iterdir() if p.is_dir() and not p.name.startswith(".")]
    report = runs.read_json(run / runs.DATA_REPORT)
    classes = report["classes"]
    with serve(augmented_runs, tmp_path) as url, browser_page() as page:
        page.goto(url)
        expect(page.get_by_role("heading", name="Classify")).to_be_visible()
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
    assert len(list(tmp_path.glob("data-*.png"))) == 3
