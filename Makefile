# withcache: the operator's entry points. Variables: DATA, MANIFESTS, LISTEN, PYTHON.
PYTHON ?= python3
DATA ?= data
MANIFESTS ?= manifests
LISTEN ?= 8080
PREFIX ?= /usr/local
WITHCACHE = $(PYTHON) -m withcache

.PHONY: help setup test test-long lint format check sync serve watch report demo bench bench-quick install-shims clean

help:
	@echo "make demo         offline demo: origin + sync + nginx + a hit and a miss"
	@echo "make test         the test suite (real nginx, origin, shims)"
	@echo "make test-long    the same with the long fault campaigns"
	@echo "make check        validate manifests ($(MANIFESTS))"
	@echo "make sync         fetch every manifest entry into $(DATA)"
	@echo "make serve        serve $(DATA)/www with nginx on $(LISTEN)"
	@echo "make watch        follow nginx's log, record misses and hits"
	@echo "make report       what is new since the last report (silent when nothing is)"
	@echo "make install-shims PREFIX=/usr/local [SHADOW=1]  curlwithcache, wgetwithcache (+ curl/wget links)"
	@echo "make bench        benchmarks (bench/README.md); bench-quick for a short run"
	@echo "make lint         ruff and mypy --strict"

# One-time setup of a fresh Debian machine (nginx, test tools, the package itself);
# the stamp re-runs it when pyproject.toml changes.
setup: .setup-done

.setup-done: pyproject.toml .ci/setup
	bash .ci/setup
	@touch $@

# Two workers (pytest-xdist): most of a test's time is spent waiting on nginx, origins and
# child processes, so two run side by side in about 60% of the wall time of one.
PYTEST_JOBS ?= auto --maxprocesses 4

# Bytecode first: the tests start withcache hundreds of times, and with
# PYTHONDONTWRITEBYTECODE set each start would compile every module again.
test: .setup-done
	$(PYTHON) -m compileall -q withcache
	$(PYTHON) -m pytest -q -n $(PYTEST_JOBS) tests

test-long: .setup-done
	$(PYTHON) -m compileall -q withcache
	WITHCACHE_LONG=1 $(PYTHON) -m pytest -q -n $(PYTEST_JOBS) tests

lint: .setup-done
	ruff check .
	ruff format --check .
	mypy

format:
	ruff check --fix .
	ruff format .

check:
	$(WITHCACHE) check $(MANIFESTS)

sync:
	$(WITHCACHE) sync --data $(DATA) -m $(MANIFESTS)

serve:
	$(WITHCACHE) serve --data $(DATA) --listen $(LISTEN)

watch:
	$(WITHCACHE) watch --data $(DATA)

report:
	$(WITHCACHE) report --data $(DATA)

demo: .setup-done
	$(PYTHON) -m withcache.demo

# The benches' own tools (wrk, ab, openssl, rsync): bench/setup installs what is missing.
.bench-setup-done: bench/setup
	bash bench/setup
	@touch $@

bench: .setup-done .bench-setup-done
	$(PYTHON) bench/run_all.py

bench-quick: .setup-done .bench-setup-done
	$(PYTHON) bench/run_all.py --quick

install-shims:
	$(WITHCACHE) install-shims $(if $(SHADOW),--shadow) $(PREFIX)/bin

clean:
	rm -rf .pytest_cache build dist *.egg-info .setup-done .bench-setup-done
