"""The app's pages, one module each with `render(entry, entries, root)` (routed by
`imgclf.ui.app.PAGES`): classify (with batch, a zip or folder of images), data, curves,
evaluation, compare, lessons, model, and train (with builder, the dataset builder). The helpers
they share (catalog, charts, jobs, state, data_info) live one level up in `imgclf.ui`.
"""
