# neurosql_pl — `make help` lists the targets. Every target installs what it needs first.
PYTHON ?= python3.11
VENV   ?= .venv
PY     := $(VENV)/bin/python
DATA   ?= mnist
MODEL  ?= $(if $(filter oasis,$(DATA)),neurosql_unet,neurosql)
OUT    ?= runs/$(DATA)
ARGS   ?=
SWEEP_FILE ?= experiments/sweeps/neurosql_mnist.yaml
N      ?= 1000
SEED   ?= 0
TRAINER ?= default
CONFIGS = --config experiments/configs/model/$(MODEL).yaml \
          --config experiments/configs/data/$(DATA).yaml \
          --config experiments/configs/trainer/$(TRAINER).yaml

.PHONY: help install train data eval sample compare ablate scaling fewshot latent2d test test-all bench sweep agent sweep-dry clean

help:  ## list the targets
	@grep -E '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'
	@echo "  variables: DATA=$(DATA) MODEL=$(MODEL) TRAINER=$(TRAINER) OUT=$(OUT) N=$(N) ARGS='--model.rho 0.5 …'"
	@echo "  DATA: $$(ls experiments/configs/data | sed 's/\.yaml//' | tr '\n' ' ')  MODEL: $$(ls experiments/configs/model | sed 's/\.yaml//' | tr '\n' ' ')"

install: $(VENV)/.installed  ## create .venv with the pinned requirements (once)

$(VENV)/.installed: requirements.txt requirements-nodeps.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -r requirements.txt
	$(PY) -m pip install --quiet --no-deps -r requirements-nodeps.txt
	$(PY) -m pip install --quiet --no-deps -e .
	touch $@

train: install  ## train MODEL on DATA (default: MODEL=neurosql, DATA=mnist) into OUT; extra CLI flags in ARGS
	@test -f experiments/configs/data/$(DATA).yaml || { echo "unknown DATA=$(DATA); choose one of: $$(ls experiments/configs/data | sed 's/\.yaml//' | tr '\n' ' ')"; exit 2; }
	@test -f experiments/configs/model/$(MODEL).yaml || { echo "unknown MODEL=$(MODEL); choose one of: $$(ls experiments/configs/model | sed 's/\.yaml//' | tr '\n' ' ')"; exit 2; }
	@test -f experiments/configs/trainer/$(TRAINER).yaml || { echo "unknown TRAINER=$(TRAINER); choose one of: $$(ls experiments/configs/trainer | sed 's/\.yaml//' | tr '\n' ' ')"; exit 2; }
	$(PY) -m neurosql_pl fit $(CONFIGS) --trainer.default_root_dir $(OUT) $(ARGS)

data: install  ## download (or check, for manual-download datasets) DATA into data/
	$(PY) -m neurosql_pl prepare $(DATA) $(ARGS)

eval: install  ## score CKPT=<run>/checkpoints/last.ckpt with N samples: writes <run>/eval.json, prints a table
	@test -n "$(CKPT)" || { echo "set CKPT=<run folder>/checkpoints/last.ckpt"; exit 2; }
	$(PY) -m neurosql_pl evaluate --ckpt $(CKPT) --n $(N) $(ARGS)

sample: install  ## N samples of CKPT=<run>/checkpoints/last.ckpt: PNGs, grid.png, samples.npz (SEED=0)
	@test -n "$(CKPT)" || { echo "set CKPT=<run folder>/checkpoints/last.ckpt"; exit 2; }
	$(PY) -m neurosql_pl sample --ckpt $(CKPT) --n $(N) --seed $(SEED) $(ARGS)

compare: install  ## NeuroSQL vs VAE, GAN, DDPM on DATA, same wall time each, all metrics (OUT=runs/compare/DATA)
	$(PY) -m experiments.compare --data $(DATA) --out $(if $(filter runs/$(DATA),$(OUT)),runs/compare/$(DATA),$(OUT)) $(ARGS)

fewshot: install  ## NeuroSQL vs VAE, GAN on N = 100…5000 training images, 2 seeds: FID, KID, memorisation vs steps (OUT=runs/fewshot/DATA)
	$(PY) -m experiments.fewshot --data $(DATA) --out $(if $(filter runs/$(DATA),$(OUT)),runs/fewshot/$(DATA),$(OUT)) $(ARGS)

ablate: install  ## NeuroSQL's quality levers one by one (+ VAE, GAN), same wall time each: FID vs time (OUT=runs/ablate/DATA)
	$(PY) -m experiments.ablate --data $(DATA) --out $(if $(filter runs/$(DATA),$(OUT)),runs/ablate/$(DATA),$(OUT)) $(ARGS)

latent2d: install  ## Figure 2: d = 2 NeuroSQL vs a 2-D VAE on MNIST, codes by digit + decoded grids (OUT=runs/latent2d)
	$(PY) -m experiments.latent2d --out $(if $(filter runs/$(DATA),$(OUT)),runs/latent2d,$(OUT)) $(ARGS)

scaling: install  ## Figure 5: epoch time against N for VAE, GAN, NeuroSQL at several m (OUT=runs/scaling)
	$(PY) -m experiments.scaling --out $(if $(filter runs/$(DATA),$(OUT)),runs/scaling,$(OUT)) $(ARGS)

test: install  ## the default test suite (CPU, no network, < 15 min on 2 cores)
	$(PY) -m pytest -m "not slow" -q

test-all: install  ## every test, the slow ones too
	$(PY) -m pytest -q

bench: install  ## speed benchmarks (GEMM cost, lattice build, assignment share of an epoch)
	$(PY) -m experiments.bench

sweep: install  ## create a W&B sweep from SWEEP_FILE (needs a W&B login); prints its id
	$(VENV)/bin/wandb sweep $(SWEEP_FILE)

agent: install  ## run trials of SWEEP=<entity/project/sweep_id>
	@test -n "$(SWEEP)" || { echo "set SWEEP=<entity/project/sweep_id> (printed by make sweep)"; exit 2; }
	$(VENV)/bin/wandb agent $(SWEEP)

sweep-dry: install  ## two trials of SWEEP_FILE, offline, no login: their run folders and val/kid (extra flags in ARGS)
	$(PY) -m neurosql_pl.sweeps $(SWEEP_FILE) -- $(ARGS)

clean:  ## remove caches (keeps .venv, data and runs)
	rm -rf .pytest_cache build *.egg-info
