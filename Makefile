# The two commands of the README. Each installs what it needs first (.ci/setup).
.PHONY: setup demo test lint bench

setup:
	@bash .ci/setup

demo: setup
	.venv/bin/htpdata demo

test: setup
	.venv/bin/python -m pytest

lint: setup
	.venv/bin/ruff check src tests benchmarks docs/_ext docs/conf.py
	.venv/bin/mypy
