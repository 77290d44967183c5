"""The app in a real browser: `streamlit run app.py` as a server on 127.0.0.1 against a fixture
runs root, driven by Debian's Chromium through Playwright (no browser download)."""

from __future__ import annotations

from pathlib import Path

import pytest
from browser_kit import browser_page, go_to, hue, hue_gap, serve, settled

from imgclf import runs

PAGES = ("Training curves", "Evaluation", "Compare", "Model", "Train")


@pytest.fixture
def server(app_runs: Path, tmp_path: Path):
    """The app served on a free local port; stopped at the end whatever happens."""
    with serve(app_runs, tmp_path) as url:
        yield url


@pytest.mark.slow
def test_upload_in_a_real_browser_shows_the_label(server: str, app_runs: Path, tmp_path: Path):
    from playwright.sync_api import expect

    from imgclf.predict import Predictor
    from imgclf.ui import catalog

    entry = catalog.list_runs(app_runs)[0]
    labels = runs.read_labels(entry.path)
    sample = sorted((entry.path / runs.SAMPLES).glob("*.png"))[0]
    expected, _ = Predictor.from_path(entry.path).predict_files([sample], k=3)
    with browser_page() as page:
        page.goto(server)
        # The page paints (title, uploader) while the model is still loading, and says so.
        expect(page.get_by_role("heading", name="Classify")).to_be_visible(timeout=90_000)
        expect(page.get_by_text("Loading the model")).to_be_visible(timeout=30_000)
        page.screenshot(path=tmp_path / "classify-loading.png")
        expect(page.get_by_text("Upload one or more images")).to_be_visible(timeout=90_000)
        page.screenshot(path=tmp_path / "classify-empty.png")
        page.locator("input[type=file]").first.set_input_files(str(sample))
        result = page.get_by_text(" · p = ").first
        expect(result).to_be_visible(timeout=60_000)
        shown = result.inner_text().split(" · ")[0].strip()
        assert shown in labels and shown == expected[0].label
        settled(page)
        page.screenshot(path=tmp_path / "classify.png")
        # Every top-k bar is labelled (Vega used to drop overlapping labels: 2 of 3 shown).
        # Vega keeps a label it prunes for overlap in the SVG, with opacity 0.
        labels_drawn = page.get_by_test_id("stVegaLiteChart").first.locator(
            ".role-axis-label text:not([opacity='0'])"
        )
        expect(labels_drawn.first).to_be_attached(timeout=30_000)  # Vega draws after load
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
                expect(symbols.first).to_be_attached(timeout=30_000)
                fills = [symbols.nth(i).get_attribute("fill") for i in range(symbols.count())]
                hues = [hue(f) for f in fills]
                assert len(hues) == 2 and hue_gap(*hues) > 0.1, fills  # not two blues
                names = set(legend.locator(".role-legend-label text").all_text_contents())
                assert names == {e.name for e in catalog.list_runs(app_runs)[:2]}, names
            page.screenshot(path=tmp_path / f"{name.lower().replace(' ', '-')}.png")
        # Back on Classify the upload is still there (kept per run until cleared).
        go_to(page, "Classify")
        expect(page.get_by_text(" · p = ").first).to_be_visible(timeout=60_000)
        assert page.get_by_text(" · p = ").first.inner_text().startswith(shown)
        expect(page.get_by_text(sample.name).first).to_be_visible()
        page.screenshot(path=tmp_path / "classify-kept.png")
        page.get_by_role("button", name="Clear images").click()
        settled(page)
        expect(page.get_by_text(" · p = ")).to_have_count(0)
        expect(page.get_by_text("Upload one or more images")).to_be_visible()
    assert len(list(tmp_path.glob("*.png"))) == 4 + len(PAGES)
