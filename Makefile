# `make up` runs Loa on its embedded defaults; `make test` runs the whole suite (as CI does).
VENV    ?= .venv
PYTHON  ?= python3
STAMP   := $(VENV)/.installed-$(shell sha1sum pyproject.toml | cut -c1-12)

.PHONY: up test lint typecheck unit integration bench catalogs system-deps clean

$(STAMP): pyproject.toml
	$(MAKE) system-deps
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet -e '.[dev]'
	rm -f $(VENV)/.installed-*
	touch $@

# What Loa needs from the system: redis-server (the embedded Redis of `loa up` and the tests),
# Chromium (the browser tests drive /usr/bin/chromium; Playwright downloads no browser) and a
# Thai font (the demo speaks Thai; without one the browser draws its text as empty boxes).
system-deps:
	@command -v redis-server >/dev/null || { \
	  echo "installing redis-server (Debian package)"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server; }
	@test -x /usr/bin/chromium || { \
	  echo "installing chromium (Debian package)"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; }
	@fc-list :lang=th | grep -q . || { \
	  echo "installing a Thai font (Debian package fonts-tlwg-loma-otf)"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq fonts-tlwg-loma-otf; }

up: $(STAMP)
	$(VENV)/bin/loa up

lint: $(STAMP)
	$(VENV)/bin/ruff check coordinator channels sandbox tests bench
	$(VENV)/bin/lint-imports --no-cache

typecheck: $(STAMP)
	$(VENV)/bin/mypy

unit: $(STAMP)
	$(VENV)/bin/pytest tests/unit -q

integration: $(STAMP)
	$(VENV)/bin/pytest tests/integration -q

test: lint typecheck $(STAMP)
	$(VENV)/bin/pytest -q -n 2 --dist loadfile --durations=15

# The public words' message ids (config/locale/loa.pot) extracted again, and each language's
# catalog updated from it (new ids untranslated, gone ones kept as obsolete); then translate
# the empty msgstr entries of config/locale/<tag>/LC_MESSAGES/loa.po.
catalogs: $(STAMP)
	$(VENV)/bin/pybabel extract -F babel.cfg -k _ -k N_ -k gettext:2 --no-location \
	  --sort-output --project=Loa -o config/locale/loa.pot .
	$(VENV)/bin/pybabel update -D loa -i config/locale/loa.pot -d config/locale \
	  --no-fuzzy-matching --ignore-obsolete

bench: $(STAMP)
	$(VENV)/bin/python bench/pipeline.py

clean:
	rm -rf $(VENV) .loa .pytest_cache .mypy_cache .ruff_cache
