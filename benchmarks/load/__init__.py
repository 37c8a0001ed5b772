"""Load scripts: the whole server driven by SIPp as a carrier's load tester drives it.

Run them from the repository root as modules, e.g.
``.venv/bin/python -m benchmarks.load.cps``; README.md here says what each
measures and how long it takes, benchmarks/results-load.md holds the figures.
"""
