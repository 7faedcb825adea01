# toxbridge: `make demo` (install + two households exchanging a mail over Tox), `make test`.
# Run as root on Debian 12. Installs Debian packages and a virtualenv in .venv.

PYTHON  ?= python3
VENV    := .venv
PY      := $(VENV)/bin/python
# Every Debian package a test, the demo or a role's apt task needs (tests/test_deps.py checks
# the roles' and the tests' needs against this list): the Ansible test provisions households
# in the loopback-only namespace, where apt cannot fetch what is missing. python3-apt: Ansible's
# apt module; python3-nacl: role tox_bootstrapd; systemd: systemd-analyze for the units;
# ca-certificates: pip's TLS to PyPI.
APT_PACKAGES := postfix dovecot-core dovecot-lmtpd dovecot-imapd dovecot-pop3d dovecot-sieve swaks \
                toxcore-utils libtoxcore2 iproute2 util-linux python3-venv zbar-tools \
                openssl nftables ansible-core ansible-lint python3-apt python3-nacl systemd ca-certificates \
                toxic tmux
# Tests run in a network namespace that has only loopback: nothing can leave this machine.
LOOPBACK_ONLY := unshare -n sh -c 'ip link set lo up && exec "$$0" "$$@"'

.PHONY: all deps apt-packages venv wheels demo demo-stop lint test unit bench clean

all: test

deps: .deps.stamp
.deps.stamp: Makefile
	@missing=$$(for p in $(APT_PACKAGES); do dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q 'ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages: $$missing"; \
	  echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections; \
	  guard=; if [ ! -e /usr/sbin/policy-rc.d ]; then guard=1; printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d; chmod 755 /usr/sbin/policy-rc.d; fi; \
	  apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q -o DPkg::Lock::Timeout=300 $$missing; rc=$$?; \
	  [ -n "$$guard" ] && rm -f /usr/sbin/policy-rc.d; \
	  [ $$rc -eq 0 ] || exit $$rc; \
	fi
	@touch $@

# The list above, for tests/test_deps.py.
apt-packages:
	@echo $(APT_PACKAGES)

venv: $(VENV)/.installed
# The locked runtime dependencies first (deploy/requirements.lock: what every Pi installs), so the
# tests run exactly those versions; then toxbridge itself and the test tools.
$(VENV)/.installed: pyproject.toml deploy/requirements.lock
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --require-hashes -r deploy/requirements.lock
	$(VENV)/bin/pip install -q -e '.[test]'
	@touch $@

# toxbridge's dependencies as wheels, for the Ansible test: it provisions households in the
# loopback-only namespace, where pip cannot reach PyPI (--no-index --find-links .wheels).
wheels: .wheels/.stamp
.wheels/.stamp: pyproject.toml deploy/requirements.lock | venv
	$(VENV)/bin/pip wheel -q -w .wheels --require-hashes -r deploy/requirements.lock
	$(VENV)/bin/pip wheel -q -w .wheels setuptools wheel
	@touch $@

demo: deps venv
	$(PY) -m toxbridge.lab.demo start

demo-stop: venv
	$(PY) -m toxbridge.lab.demo stop

# ruff (lint and format) and mypy, configured in pyproject.toml, on the whole tree.
lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

test: deps venv wheels lint
	$(LOOPBACK_ONLY) $(VENV)/bin/pytest -q -ra

unit: venv
	$(VENV)/bin/pytest -q -m 'not integration'

# Benchmarks of issue 6 on loopback and of issue 18 on the lab internet (bridged against ordinary
# SMTP+STARTTLS on the same emulated links; not part of `make test`): a table on stdout, JSON in
# bench/results.json. BENCH_ARGS passes options, e.g. `make bench BENCH_ARGS='--small 500 --up 2'`
# or `--skip internet` for the loopback part alone.
BENCH_ARGS ?=
bench: deps venv
	$(LOOPBACK_ONLY) $(PY) -m bench.run $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .wheels .deps.stamp *.egg-info
