# course-adv: two commands set up a fresh machine.
#   make lab    set up .venv (if missing or stale), then open the course in JupyterLab
#   make test   set up .venv, then run everything: ruff, nbstripout, unit tests, nbval (quick mode)

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.course-adv-installed
LAB_ARGS ?=
NOTEBOOKS := $(wildcard notebooks/*.ipynb) $(wildcard solutions/*.ipynb) $(wildcard exercises/*.ipynb)
# what `make lab` runs: JupyterLab from the venv (a test swaps it for a script that prints its environment)
LAB_JUPYTER ?= $(BIN)/jupyter
# nbval gets a fresh checkpoint cache each run; it runs the untouched exercises too, so Run All
# on a student's copy must reach the end with friendly "not written yet" messages, so notebook 00 really trains and 02 really reuses it
NBVAL_CACHE := $(CURDIR)/.pytest_cache/course_adv_nbval

export PIP_DISABLE_PIP_VERSION_CHECK := 1
# Agg (no windows) is for the test runs only: in `make lab` a student's plt.show() must draw.
TEST_ENV := MPLBACKEND=Agg

.PHONY: lab test setup lint unit nbval exercises bench warm clean help

help:
	@echo "make lab    set up, then open the course in JupyterLab"
	@echo "make test   set up, then run ruff, nbstripout, unit tests and nbval (quick mode)"
	@echo "make bench  print the benchmark figures (attacks, defences)"
	@echo "make warm   run every notebook once, so the checkpoint cache holds every model (QUICK=1: quick mode)"

setup: $(STAMP)

# The venv is stale when pyproject.toml changed or its interpreter no longer runs; then rebuild it.
$(STAMP): pyproject.toml
	@if ! $(BIN)/python -c "import sys" >/dev/null 2>&1; then \
		echo "creating $(VENV) with $(PYTHON)"; rm -rf $(VENV); $(PYTHON) -m venv $(VENV); fi
	$(BIN)/python -m pip install --quiet --upgrade "pip>=23.1"
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	@touch $(STAMP)

# .venv/bin first on the PATH: `!` commands in a notebook find the venv's python, pip and
# `course-adv` (e.g. `course-adv grade`), not the system's. JupyterLab's terminals would start a
# login shell, whose profile resets PATH; they get a bash that reads the user's ~/.bashrc and
# then activates the venv (a server config file kept inside the venv).
LAB_RC := $(VENV)/course-adv-bashrc
LAB_CONFIG := $(VENV)/course-adv-lab-config.py
lab: $(STAMP)
	@printf '%s\n' '[ -f ~/.bashrc ] && . ~/.bashrc' '. "$(CURDIR)/$(BIN)/activate"' > $(LAB_RC)
	@printf 'c.ServerApp.terminado_settings = {"shell_command": ["bash", "--rcfile", "%s"]}\n' \
		"$(CURDIR)/$(LAB_RC)" > $(LAB_CONFIG)
	PATH="$(CURDIR)/$(BIN):$$PATH" VIRTUAL_ENV="$(CURDIR)/$(VENV)" $(LAB_JUPYTER) lab \
		--config="$(CURDIR)/$(LAB_CONFIG)" --ServerApp.root_dir="$(CURDIR)" \
		--LabApp.default_url=/lab/tree/notebooks $$( [ "$$(id -u)" = 0 ] && echo --allow-root ) $(LAB_ARGS)

lint: $(STAMP)
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .
	$(BIN)/nbstripout --verify $(NOTEBOOKS)
	$(BIN)/course-adv make-exercises --check

# one torch thread in tests: on 2 cores, competing thread pools slow runs down 4-8x
unit: $(STAMP)
	$(TEST_ENV) OMP_NUM_THREADS=1 $(BIN)/python -m pytest tests -q

nbval: $(STAMP)
	rm -rf "$(NBVAL_CACHE)"
	$(TEST_ENV) COURSE_ADV_QUICK=1 COURSE_ADV_CACHE="$(NBVAL_CACHE)" $(BIN)/python -m pytest -q \
		--nbval-lax --nbval-current-env --nbval-cell-timeout=900 -p no:cacheprovider \
		notebooks solutions exercises

test: lint unit nbval
	@echo "make test: all passed"

exercises: $(STAMP)
	$(BIN)/course-adv make-exercises

bench: $(STAMP)
	$(BIN)/python -m course_adv.bench attacks
	$(BIN)/python -m course_adv.defences_report

# Instructors: run every notebook once, in order, so the checkpoint cache holds every model the
# course trains; copy that folder to the room's machines instead of training there (INSTRUCTORS.md).
# Outputs are discarded; the notebooks in the repository stay untouched. QUICK=1 warms quick mode.
QUICK ?=
warm: $(STAMP)
	@tmp=$$(mktemp -d); trap 'rm -rf "$$tmp"' EXIT; \
	for nb in $(sort $(wildcard notebooks/*.ipynb)); do \
		start=$$(date +%s); \
		PATH="$(CURDIR)/$(BIN):$$PATH" MPLBACKEND=Agg $(if $(QUICK),COURSE_ADV_QUICK=1) \
			$(LAB_JUPYTER) nbconvert \
			--to notebook --execute --ExecutePreprocessor.timeout=3600 --output-dir "$$tmp" "$$nb" \
			>"$$tmp/log" 2>&1 || { cat "$$tmp/log"; echo "make warm: $$nb failed"; exit 1; }; \
		echo "$$nb: $$(( $$(date +%s) - start )) s"; \
	done; \
	echo "warm: $$($(BIN)/python -c 'from course_adv.data import cache_dir; print(cache_dir())')"

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache build *.egg-info
