# retina-edu: every target sets itself up.
#   make lab    create .venv, install, register the kernel, make the shapes data, open JupyterLab
#   make test       the same environment, then every test (unit, notebooks under nbval, browser)
#   make test-fast  unit tests only, without the slow ones (a few minutes)
#   make lint       ruff: lint and format check (make format rewrites)
#   make bench      side-by-side benchmarks against torchvision's RetinaNet
#   make student    the student edition (solutions replaced by stubs, with nbgrader) in build/student/
#   make test-student  nbgrader autogrades both editions: instructor full marks, student zero
#   make site       the course website: the notebooks as saved, rendered offline-ready into build/site/
#   make test-site  every page of build/site in headless Chromium (builds it first when needed)
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
KERNEL := $(VENV)/share/jupyter/kernels/retina-edu/kernel.json
SHAPES := data/shapes/train/annotations.json
BUILD := $(CURDIR)/build

# Tests never read or write the user's home: everything lives under build/.
TEST_ENV := HOME=$(BUILD)/home \
	MPLCONFIGDIR=$(BUILD)/mplconfig \
	JUPYTER_CONFIG_DIR=$(BUILD)/jupyter/config \
	JUPYTER_DATA_DIR=$(BUILD)/jupyter/data \
	JUPYTER_RUNTIME_DIR=$(BUILD)/jupyter/runtime \
	IPYTHONDIR=$(BUILD)/ipython \
	TORCH_HOME=$(BUILD)/torch \
	JUPYTER_PLATFORM_DIRS=1 \
	PYDEVD_DISABLE_FILE_VALIDATION=1 \
	MPLBACKEND=agg

.PHONY: lab test test-fast test-notebooks lint format install kernel data bench browser-deps notebooks clean \
	instructor student test-student site test-site

# nbval: compare only cells marked NBVAL_CHECK_OUTPUT; run in this environment; long training cells.
NBVAL := --nbval-lax --nbval-sanitize-with tests/nbval_sanitize.cfg --nbval-current-env \
	--nbval-cell-timeout=1800
# What ruff checks: everything we write, the notebooks' code cells included.
LINT_PATHS := retina_edu tests benchmarks tools notebooks docs/site

install: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	@touch $(STAMP)

kernel: $(KERNEL)

# nbgrader and its database tools: only for the editions, not in the learner's install.
INSTRUCTOR_STAMP := $(VENV)/.instructor-stamp
instructor: $(INSTRUCTOR_STAMP)

$(INSTRUCTOR_STAMP): $(STAMP)
	$(PY) -m pip install --quiet -e '.[instructor]'
	@touch $(INSTRUCTOR_STAMP)

$(KERNEL): $(STAMP)
	$(PY) -m ipykernel install --sys-prefix --name retina-edu --display-name "Python (retina-edu)"

data: $(SHAPES)

$(SHAPES): $(STAMP)
	$(PY) -m retina_edu shapes --out data/shapes

# As root (a container, a cloud VM) Jupyter refuses to start unless told it may.
lab: install kernel data
	$(VENV)/bin/jupyter lab --notebook-dir=notebooks \
		--LabApp.news_url=None \
		--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate \
		$$(if [ "$$(id -u)" = 0 ]; then echo --allow-root; fi)

# Chromium for the browser tests: installed with apt-get where we may (CI runs as root);
# elsewhere the browser tests skip and say why. Quiet when there is nothing to do.
browser-deps:
	@if ! [ -x /usr/bin/chromium ] && ! command -v chromium >/dev/null 2>&1; then \
		if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
			echo "Installing Debian's chromium for the browser tests (log: $(BUILD)/apt-chromium.log)"; \
			mkdir -p $(BUILD); \
			if ! { DEBIAN_FRONTEND=noninteractive apt-get update -qq && \
			       DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; } >$(BUILD)/apt-chromium.log 2>&1; then \
				tail -n 5 $(BUILD)/apt-chromium.log; \
				echo "Could not install chromium: the browser tests will skip"; \
			fi; \
		else \
			echo "No chromium, and apt-get as root is not available to install it: the browser tests will skip"; \
		fi; \
	fi

# The notebooks run first: the browser checks then reuse the detectors notebooks 08 and 11 trained.
test: install kernel browser-deps
	@mkdir -p $(BUILD)/home $(BUILD)/mplconfig $(BUILD)/torch
	env $(TEST_ENV) $(PY) -m pytest $(NBVAL) --junitxml=$(BUILD)/test-results.xml notebooks tests \
		--ignore=tests/site $(PYTEST_ARGS)

# Unit tests only (no notebooks, no browser, nothing marked slow): the quick loop while you work.
test-fast: install
	@mkdir -p $(BUILD)/home $(BUILD)/mplconfig $(BUILD)/torch
	env $(TEST_ENV) $(PY) -m pytest tests --ignore=tests/site -m "not slow and not browser" $(PYTEST_ARGS)

# The notebooks alone, or one: make test-notebooks NB=notebooks/03_focal_loss.ipynb
test-notebooks: install kernel
	@mkdir -p $(BUILD)/home $(BUILD)/mplconfig $(BUILD)/torch
	env $(TEST_ENV) $(PY) -m pytest $(NBVAL) $(or $(NB),notebooks) $(PYTEST_ARGS)

lint: install
	$(VENV)/bin/ruff check $(LINT_PATHS)
	$(VENV)/bin/ruff format --check $(LINT_PATHS)

format: install
	$(VENV)/bin/ruff check --fix $(LINT_PATHS)
	$(VENV)/bin/ruff format $(LINT_PATHS)

# Re-execute every notebook in place (keeps outputs for readers on GitHub).
notebooks: install kernel data
	env $(TEST_ENV) $(PY) tools/execute_notebooks.py $(or $(NB),notebooks/*.ipynb)

# The student edition, written by nbgrader from the notebooks (the instructor edition).
student: instructor kernel
	env $(TEST_ENV) $(PY) tools/editions.py student

# nbgrader autogrades both editions; run after `make test`, whose runs notebooks 08 and 09 reuse.
test-student: instructor kernel data
	@mkdir -p $(BUILD)/home $(BUILD)/mplconfig $(BUILD)/torch
	env $(TEST_ENV) $(PY) tools/editions.py grade

# The course website: Sphinx + myst-nb render the notebooks' saved outputs (nothing runs) into build/site/,
# with MathJax and the widget scripts served from the site itself (fetched once from npm, pinned).
SITE_STAMP := $(VENV)/.site-stamp
SITE_BUILT := $(BUILD)/site/.built
SITE_SOURCES := README.md tools/build_site.py $(wildcard docs/site/*.* docs/site/_static/*) \
	$(wildcard notebooks/[0-9][0-9]_*.ipynb)

$(SITE_STAMP): $(STAMP)
	$(PY) -m pip install --quiet -e '.[site]'
	@touch $(SITE_STAMP)

site: $(SITE_STAMP)
	env $(TEST_ENV) $(PY) tools/build_site.py

$(SITE_BUILT): $(SITE_STAMP) $(SITE_SOURCES)
	env $(TEST_ENV) $(PY) tools/build_site.py

# Not part of `make test` (which leaves tests/site out): it needs the site built.
test-site: $(SITE_BUILT) browser-deps
	@mkdir -p $(BUILD)/home
	env $(TEST_ENV) $(PY) -m pytest tests/site -m site $(PYTEST_ARGS)

bench: install
	env $(TEST_ENV) $(PY) -m benchmarks.run_all

clean:
	rm -rf $(BUILD) .pytest_cache
