# Two commands do all set-up on a fresh machine with Python >= 3.10 and pip:
#   make demo   - creates .venv-demo, records examples/train.py with `runtel run` and shows it
#   make test   - creates .venv, installs runtel with its test extras and runs the whole suite
PYTHON ?= python3
VENV ?= .venv
DEMO_VENV ?= .venv-demo

.PHONY: demo test lint bench clean system-tools

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -e '.[dev]'
	touch $@

$(DEMO_VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(DEMO_VENV)
	$(DEMO_VENV)/bin/pip install -q --upgrade pip
	$(DEMO_VENV)/bin/pip install -q -e .
	touch $@

demo: $(DEMO_VENV)/.installed
	RUNTEL_DIR=runs/demo RUNTEL_SAMPLE_INTERVAL=0.1 $(DEMO_VENV)/bin/runtel run --name demo-train --tag example=train -- $(DEMO_VENV)/bin/python examples/train.py --epochs 3
	RUNTEL_DIR=runs/demo $(DEMO_VENV)/bin/runtel show latest

test: $(VENV)/.installed system-tools
	$(VENV)/bin/python -m pytest -n 2 -q

# System tools some tests drive for real (headless Chromium for the HTML report, Prometheus scraping the
# pull endpoint, zsh and fish for shell completion): installed with Debian's apt (one update for all)
# where we are root and one is missing; elsewhere those tests skip with the reason (under CI=true they
# fail instead). Debian's prometheus package would start its own service where systemd runs; the tests
# start their own on a free port.
SYSTEM_TOOLS := chromium prometheus zsh fish
system-tools:
	@missing=""; for tool in $(SYSTEM_TOOLS); do command -v $$tool >/dev/null 2>&1 || missing="$$missing $$tool"; done; \
	if [ -n "$$missing" ] && [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		echo "installing Debian's$$missing for the tests that drive them"; \
		(apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q $$missing >/dev/null) \
		|| echo "could not install$$missing: the tests that need them will say so"; \
	fi

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check src tests benchmarks examples
	$(VENV)/bin/mypy

bench: $(VENV)/.installed
	$(VENV)/bin/pip install -q -e '.[bench]'
	$(VENV)/bin/python benchmarks/run.py

clean:
	rm -rf $(VENV) $(DEMO_VENV) runs build *.egg-info
