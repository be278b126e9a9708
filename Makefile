# seem_ray: two commands on a fresh machine -- `make demo` and `make test`.
# Both bootstrap .venv idempotently (scripts/bootstrap.sh is a no-op when nothing changed).
PY := .venv/bin/python
export RAY_TRAIN_HEALTH_CHECK_INTERVAL_S ?= 0.2
export RAY_USAGE_STATS_ENABLED ?= 0

.PHONY: bootstrap system-deps demo test test-fast test-faults lint bench bench-deps bench-peers results calibrate clean

bootstrap:
	@bash scripts/bootstrap.sh

system-deps:
	@bash scripts/system_deps.sh

## The main job: the embedded demo sweep (local PointMaze dataset, SEEM stopper, MLflow).
## Each run is a new sweep (runs/sweeps/demo-<time>), so `make demo` can be run again.
demo: bootstrap
	@$(PY) -m seem_ray.cli sweep --quiet --name demo-$$(date +%Y%m%d-%H%M%S)

## Lint, format check, type check, then the whole suite (unit + Ray integration + fault tests).
test: bootstrap system-deps
	@.venv/bin/ruff check .
	@.venv/bin/ruff format --check .
	@.venv/bin/mypy seem_ray
	@$(PY) -m pytest -q -p no:cacheprovider

## Unit tests only (no Ray, seconds).
test-fast: bootstrap
	@$(PY) -m pytest -q -m "not ray and not slow and not faults"

## Kill/corrupt tests alone.
test-faults: bootstrap
	@$(PY) -m pytest -q -m faults

lint: bootstrap
	@.venv/bin/ruff check . && .venv/bin/ruff format --check . && .venv/bin/mypy seem_ray

## Benchmarks print JSON (last stdout line); figures are ratios against a baseline of the same run.
bench: bootstrap
	@$(PY) benchmarks/bench_seem.py --json
	@$(PY) benchmarks/bench_seem.py --gram-paths --json
	@$(PY) benchmarks/bench_train.py --algo td3bc --steps 500 --compile --json
	@$(PY) benchmarks/bench_train.py --algo iql --steps 500 --compile --json
	@$(PY) benchmarks/bench_train.py --algo cql --steps 500 --json
	@$(PY) benchmarks/bench_bf16.py --json
	@$(PY) benchmarks/bench_ray_overhead.py --json
	@$(PY) benchmarks/bench_stopper.py --json

## The optional peer (d3rlpy 2.8.1): its deps from the `bench` extra, itself --no-deps
## (its wheel pins gymnasium 1.0; we run 1.4).
bench-deps: bootstrap
	@$(PY) -m pip install -q -e ".[dev,bench]" && $(PY) -m pip install -q --no-deps "d3rlpy==2.8.1"

## seem_ray beside d3rlpy and the CORL-style baseline: steps/s, peak RSS, score over 3 seeds.
## Another local dataset: make bench-peers PEERS_DATASET=hopper-medium-replay
PEERS_DATASET ?= pointmaze-umaze-dense
bench-peers: bench-deps
	@$(PY) -m seem_ray.cli datasets info seem_ray/$(PEERS_DATASET)-v0 >/dev/null 2>&1 \
	  || $(PY) -m seem_ray.cli datasets make $(PEERS_DATASET)
	@$(PY) benchmarks/bench_peers.py --dataset seem_ray/$(PEERS_DATASET)-v0 --json

calibrate: bootstrap
	@$(PY) benchmarks/calibrate.py
	@$(PY) benchmarks/separability.py

results: bootstrap
	@$(PY) -m experiments.run_all

clean:
	rm -rf runs .pytest_cache
