.PHONY: test demo

# Lint, type-check and run the whole test suite in a cached virtual environment.
test:
	scripts/test.sh $(ARGS)

# Install into .venv and run the demo on the six sample photos (files from ../shared/mirror
# where it exists, as make test and the README's first command take them).
demo:
	python3 -m venv .venv && .venv/bin/pip install -q . && \
	MASKWATCH_MIRROR=$${MASKWATCH_MIRROR:-$$(test -d ../shared/mirror && echo "file://$$(cd ../shared/mirror && pwd)")} \
	.venv/bin/maskwatch demo
