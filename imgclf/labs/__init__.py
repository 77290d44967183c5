"""The course's headline experiments as one command each (`imgclf-lab NAME`): seeded, with a
`--quick` mode for tests and a full mode for the docs' figures. Each writes a lab folder
(`imgclf.labs.folder`): a table (CSV and Markdown), pictures, `lab.json` with every figure and
how it was made, and a manifest, built beside its place and moved in at once."""
