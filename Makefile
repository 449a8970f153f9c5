# The two commands of README.rst:  `make run`  and  `make test`.
VENV    ?= .venv
PYTHON  ?= python3
BIN     := $(VENV)/bin

.PHONY: run test install lint clean

# Installed when setup.cfg changes. Compat editable mode keeps the twistd
# plugin visible from any directory.
$(VENV)/.installed: setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]' --config-settings editable_mode=compat
	touch $@

install: $(VENV)/.installed

tests/interop/node_modules/.package-lock.json: tests/interop/package-lock.json
	npm ci --prefix tests/interop --no-audit --no-fund --loglevel=error

# A development server on 127.0.0.1:8080, in-memory registry, NO authentication.
run: install
	$(BIN)/twistd -n --pidfile= caas-socket --auth none

test: install tests/interop/node_modules/.package-lock.json
	scripts/ensure-system-packages
	$(BIN)/ruff check caas_socket twisted tests
	$(BIN)/python -m pytest

clean:
	rm -rf $(VENV) tests/interop/node_modules twisted/plugins/dropin.cache
