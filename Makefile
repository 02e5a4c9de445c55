# The two commands of the README's quick start: `make lab` and `make test`.
# The venv is built from the system Python where there is one (/usr/bin/python3), because the
# rootless tests run the kernel as another user, who must be able to execute that interpreter.
PYTHON ?= $(shell test -x /usr/bin/python3 && echo /usr/bin/python3 || command -v python3)
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: lab test docs hub venv bytecode proxy system-tools vm-test vm-clean

venv:
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

# An editable install gets no bytecode from pip; without it (and with PYTHONDONTWRITEBYTECODE
# set, as on some machines) every kernel start compiles nskernel's sources again (~20 ms).
bytecode:
	$(BIN)/python -m compileall -q nskernel

# Set up everything, install the Isolated Python kernelspec and start JupyterLab on notebooks/.
lab: venv
	$(BIN)/pip install --quiet -e '.[lab]'
	$(MAKE) --no-print-directory bytecode
	$(BIN)/nskernel install --sys-prefix
	$(BIN)/jupyter lab --notebook-dir=notebooks --ip=127.0.0.1 --no-browser --allow-root

# JupyterHub's proxy, from npm, beside the venv (deploy/jupyterhub/jupyterhub_config.py finds it).
# Node trusts only the certificate authorities it ships with: the machine's are added, for
# registries reached through a mirror or proxy that a local authority signs.
proxy:
	test -x $(VENV)/node/node_modules/.bin/configurable-http-proxy || \
		NODE_EXTRA_CA_CERTS=$${NODE_EXTRA_CA_CERTS:-/etc/ssl/certs/ca-certificates.crt} \
		npm install --silent --no-fund --no-audit --fetch-retries=1 \
		--prefix $(VENV)/node configurable-http-proxy@4

# As root: JupyterHub on 127.0.0.1:8000 for this machine's users, each with Isolated Python.
hub: venv
	$(BIN)/pip install --quiet -e '.[hub]'
	$(MAKE) --no-print-directory bytecode proxy
	$(BIN)/python -m jupyterhub -f deploy/jupyterhub/jupyterhub_config.py

# The system tools the tests need (chromium, npm, nft, ip, ...): every missing one named in one
# line, with the apt command; as root, apt installs them (see .ci/system-tools).
system-tools:
	@PYTHON=$(PYTHON) .ci/system-tools $(if $(filter 0,$(shell id -u)),--install)

# docs/ (MyST markdown pages and the API reference) as HTML in docs/_build/html, with Sphinx.
# Any warning fails it: a page in no table of contents, a broken link, a docstring autodoc
# cannot read. -E reads every page each time, so a warning is never hidden by a cached page.
docs: venv
	$(BIN)/python -c 'import sphinx, myst_parser' 2>/dev/null || \
		$(BIN)/pip install --quiet -e '.[docs]'
	$(BIN)/python -m sphinx -W --keep-going -E -q -b html -d docs/_build/doctrees \
		docs docs/_build/html

# Install the test dependencies and run every check: lint, the docs, the unit tests (seconds,
# no root), then the integration tests and the notebooks. The system tools are checked first.
test: system-tools
	$(MAKE) --no-print-directory venv
	$(BIN)/pip install --quiet -e '.[test]'
	$(MAKE) --no-print-directory bytecode proxy
	$(BIN)/nskernel install --sys-prefix
	$(BIN)/ruff check .
	$(MAKE) --no-print-directory docs
	$(BIN)/python -m pytest tests/unit
	$(BIN)/python -m pytest --ignore=tests/unit

# nskernel on a real systemd + pure cgroup v2 machine: a Debian guest under qemu (built once,
# cached in ~/.cache/nskernel/vm), nskernel installed there from this checkout's wheel, the
# cgroup, limit, kernel and notebook 13/14 tests as root and as a user, and the hub test as
# root with the proxy installed here (see vm/run.sh). Root.
vm-test: venv
	$(MAKE) --no-print-directory proxy
	vm/run.sh $(abspath $(BIN))/python

# Remove the cached guest (and the last run's files) that vm-test keeps.
vm-clean:
	rm -rf $${NSKERNEL_VM_DIR:-$${XDG_CACHE_HOME:-$$HOME/.cache}/nskernel/vm}
