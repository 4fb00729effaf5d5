# Sentryline — one-command entry points for a fresh machine.
#   make demo   the whole data path (simulator → gateway → broker → central → CAP)
#   make test   the test suite (real Mosquitto, real pymodbus servers)

PYTHON ?= python3
VENV   ?= .venv
PY      = $(VENV)/bin/python
STAMP   = $(VENV)/.installed

.PHONY: demo test lint bench clean mosquitto faketime venv train

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
		if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
			echo "installing mosquitto (apt-get)"; \
			(apt-get install -y -q mosquitto >/dev/null 2>&1 || \
			 (apt-get update -q >/dev/null && apt-get install -y -q mosquitto >/dev/null)); \
		else \
			echo "mosquitto not found and cannot be installed here: install it (apt-get install mosquitto)"; \
		fi; }

# libfaketime lets the fault suite jump one process's clock without touching the machine's.
faketime:
	@ls /usr/lib/*/faketime/libfaketimeMT.so.1 >/dev/null 2>&1 || { \
		if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
			echo "installing libfaketime (apt-get)"; \
			(apt-get install -y -q libfaketime >/dev/null 2>&1 || \
			 (apt-get update -q >/dev/null && apt-get install -y -q libfaketime >/dev/null)); \
		else \
			echo "libfaketime not found: the clock-jump fault test will fail (apt-get install libfaketime)"; \
		fi; }

demo: venv mosquitto
	$(VENV)/bin/sentryline demo --out demo-out

test: venv mosquitto faketime
	$(VENV)/bin/ruff check .
	$(PY) -m pytest -q

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
