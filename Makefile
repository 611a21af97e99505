# newswatch — `make run` and `make test` do all set-up on a fresh machine.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)

.PHONY: run test lint typecheck demo bench bench-scale image-check install bytecode clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	rm -f $(VENV)/.installed-* && touch $@

install: $(STAMP)

# Our own modules' bytecode, written ahead: where PYTHONDONTWRITEBYTECODE is set (as on this
# kind of machine) Python never writes it, and every process it starts compiled them again
# (~80 ms of CPU each). Up to date, this takes a few milliseconds; a module edited since is
# compiled afresh in memory until the next run, as before.
bytecode: $(STAMP)
	@$(PY) -m compileall -q worker scheduler.py scripts bench > /dev/null

# Redis (REDIS_URL, else the checkout's own on 127.0.0.1:6390), then the daemon; Ctrl-C stops
# both. `.venv/bin/newswatch status` in another shell of this checkout shows what it does.
run: $(STAMP) bytecode
	@$(PY) scripts/run.py

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

typecheck: $(STAMP)
	$(VENV)/bin/mypy

test: $(STAMP) lint typecheck bytecode
	$(PY) scripts/ensure_redis.py --binary
	scripts/ensure_chromium.sh
	$(PY) -m pytest

demo: $(STAMP)
	$(PY) scripts/demo.py

# newswatch side by side with rss2email (installed into bench/.venv-rss2email) on the same feeds.
bench: $(STAMP) bytecode
	$(PY) scripts/ensure_redis.py --binary
	$(PY) bench/run.py $(BENCH_ARGS)
	$(PY) bench/scale.py

# The scale part alone: many feeds on many loopback hosts at 300 ms (docs/scaling.md).
bench-scale: $(STAMP) bytecode
	$(PY) scripts/ensure_redis.py --binary
	$(PY) bench/scale.py $(SCALE_ARGS)

# Builds the container image here (podman, a stand-in base from Debian's archive) and checks it
# from the inside; needs root. README: "The container image, checked here".
image-check: $(STAMP)
	$(PY) scripts/image_check.py

clean:
	@if [ -x $(PY) ]; then $(PY) scripts/ensure_redis.py --stop; fi
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache
