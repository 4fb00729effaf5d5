# Sentryline — one-command entry points for a fresh machine.
#   make demo   the whole data path (simulator → gateway → broker → central → CAP)
#   make test   the test suite (real Mosquitto, real pymodbus servers)

PYTHON ?= python3
VENV   ?= .venv
PY      = $(VENV)/bin/python
STAMP   = $(VENV)/.installed
# Test processes, one per core: more made timing-bound process tests flaky on 2 cores.
TEST_WORKERS ?= 2

.PHONY: demo test lint bench clean mosquitto faketime chromium venv train

# $(call apt_install,PACKAGE,WHY): install a Debian package where we can (root + apt).
define apt_install
if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	echo "installing $(1) (apt-get)"; \
	(apt-get install -y -q $(1) >/dev/null 2>&1 || \
	 (apt-get update -q >/dev/null && apt-get install -y -q $(1) >/dev/null)); \
else \
	echo "$(1) not found and cannot be installed here: $(2) (apt-get install $(1))"; \
fi
endef

venv: $(STAMP)

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || \
		{ echo "Python 3.11+ is required (found $$($(PYTHON) --version))"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	@touch $(STAMP)

# Mosquitto is the broker tests and demo use; install it where we can (root + apt).
mosquitto:
	@command -v mosquitto >/dev/null 2>&1 || test -x /usr/sbin/mosquitto || { \
		$(call apt_install,mosquitto,the demo and tests need it); }

# libfaketime lets the fault suite jump one process's clock without touching the machine's.
faketime:
	@ls /usr/lib/*/faketime/libfaketimeMT.so.1 >/dev/null 2>&1 || { \
		$(call apt_install,libfaketime,the clock-jump fault test needs it); }

demo: venv mosquitto
	$(VENV)/bin/sentryline demo --out demo-out

# Debian's chromium drives the dashboard's browser test (Playwright, no browser download).
chromium:
	@test -x /usr/bin/chromium || command -v chromium >/dev/null 2>&1 || { \
		$(call apt_install,chromium,the dashboard browser test needs it); }

test: venv mosquitto faketime chromium
	$(VENV)/bin/ruff check .
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadfile

lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

# Retrain the edge models (TensorFlow in its own venv; never needed at run time).
train:
	$(PYTHON) -m venv .venv-train
	.venv-train/bin/pip install --quiet -e '.[train]'
	.venv-train/bin/python -m edge_models.train all
	.venv-train/bin/python -m edge_models.manifest build

clean:
	rm -rf $(VENV) demo-out .pytest_cache .ruff_cache
