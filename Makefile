.PHONY: test demo

# Lint, type-check and run the whole test suite in a cached virtual environment.
test:
	scripts/test.sh $(ARGS)

# Install into .venv and run the demo on the six sample photos.
demo:
	python3 -m venv .venv && .venv/bin/pip install -q . && .venv/bin/maskwatch demo
