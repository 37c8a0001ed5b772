# Shorthands for the scripts in scripts/, which need nothing but bash and python3.
.PHONY: serve test demo lint bench
serve:
	scripts/serve
demo:
	scripts/demo
test:
	scripts/test
lint:
	scripts/venv && .venv/bin/ruff check .
bench:
	scripts/venv && .venv/bin/pytest benchmarks --benchmark-only
