.PHONY: setup run test lint format bench wheel-smoke
setup:
	bash scripts/setup.sh
run:
	bash scripts/run.sh
test:
	bash scripts/test.sh
lint:
	bash scripts/lint.sh
format:
	.venv/bin/ruff format . && .venv/bin/ruff check --fix .
bench:
	.venv/bin/python -m bench
wheel-smoke:
	bash scripts/wheel_smoke.sh
