# clipbuild: the two commands of the README are `make image` and `make test`; both set the machine up first.
#   make setup   Debian host packages (from clipbuild/host-tools.tsv) and the Python environment in .venv
#   make test    the whole test suite, slow end-to-end tests included (what CI runs)
#   make lint    ruff
#   make image   the default client image, built on the embedded default build root, then booted in QEMU
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
STAMPS := .stamps
HOST_TOOLS := clipbuild/host-tools.tsv
HOST_PACKAGES := $(shell awk -F'\t' '!/^\#/ && NF >= 2 {print $$2}' $(HOST_TOOLS) | sort -u)
SUDO := $(if $(filter 0,$(shell id -u)),,sudo)
export DEBIAN_FRONTEND := noninteractive

.PHONY: setup test lint image clean distclean

setup: $(STAMPS)/venv

$(STAMPS)/host-packages: $(HOST_TOOLS)
	@mkdir -p $(STAMPS)
	@missing=(); for p in $(HOST_PACKAGES); do \
	  dpkg-query -W -f='$${Status}' "$$p" 2>/dev/null | grep -q '^install ok installed' || missing+=("$$p"); \
	done; \
	if [ $${#missing[@]} -gt 0 ]; then \
	  echo "installing Debian packages: $${missing[*]}"; \
	  $(SUDO) apt-get update -qq && \
	  $(SUDO) apt-get install -y -qq --no-install-recommends "$${missing[@]}" >/dev/null; \
	else echo "Debian host packages: all present"; fi
	@touch $@

$(STAMPS)/venv: pyproject.toml $(STAMPS)/host-packages
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install -q --upgrade pip
	$(VENV)/bin/python -m pip install -q -e '.[test]'
	@touch $@

test: setup
	$(VENV)/bin/python -m pytest

lint: setup
	$(VENV)/bin/ruff check clipbuild tests bench

image: setup
	$(VENV)/bin/clipbuild image client
	$(VENV)/bin/clipbuild vm client --check

clean:
	rm -rf build

distclean: clean
	rm -rf $(VENV) $(STAMPS) *.egg-info
