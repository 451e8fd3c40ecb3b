# Two commands: `make run` serves the app on http://127.0.0.1:8080,
# `make test` runs the whole suite. Everything they need is installed here.

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PIP_FLAGS := --quiet --disable-pip-version-check
# A bare `torch` requirement would pull a multi-GB CUDA build; pin the CPU one.
TORCH_CPU := torch==2.13.0
# Each venv installs with its lock as pip constraints (-c): the exact versions
# tested together, whatever the pyproject ranges allow. Written from the venvs
# by scripts/lock_requirements.py; tests/test_dependency_audit.py audits them.
ASR_LOCK := asr-service/requirements.lock
CHAT_LOCK := vision-chat-service/requirements.lock
GATEWAY_LOCK := gateway/requirements.lock
TRAINER_LOCK := trainer/requirements.lock
TEST_LOCK := tests/requirements.lock

SERVICE_VENVS := $(VENV)/asr/.installed $(VENV)/chat/.installed $(VENV)/gateway/.installed

.PHONY: run test venvs system-run system-test protos clean

run: system-run venvs
	$(VENV)/gateway/bin/python scripts/stack.py run

test: system-test venvs $(VENV)/test/.installed $(VENV)/trainer/.installed $(VENV)/asr/.openai-whisper
	$(VENV)/test/bin/python -m pytest tests

venvs: $(SERVICE_VENVS)

system-run:
	@scripts/ensure_system_packages.sh nginx:/usr/sbin/nginx openssl:openssl

system-test: system-run
	@scripts/ensure_system_packages.sh espeak-ng:espeak-ng chromium:chromium \
		postgresql:/usr/lib/postgresql/15/bin/pg_ctl

# Each venv is rebuilt only when its package definition changes, so a second
# `make run` goes straight to starting the services.
$(VENV)/asr/.installed: asr-service/pyproject.toml protos/pyproject.toml $(ASR_LOCK)
	$(PYTHON) -m venv $(VENV)/asr
	$(VENV)/asr/bin/pip install $(PIP_FLAGS) -c $(ASR_LOCK) -e protos -e 'asr-service[embedded]'
	touch $@

# The optional openai-whisper engine, for its tests (`make run` does not need
# it): CPU torch from the pinned file first, then --no-deps so that triton
# (1 GB, CUDA only) stays out; see asr-service/requirements-openai-whisper-cpu.txt.
$(VENV)/asr/.openai-whisper: $(VENV)/asr/.installed asr-service/requirements-openai-whisper-cpu.txt
	$(VENV)/asr/bin/pip install $(PIP_FLAGS) -c $(ASR_LOCK) $(TORCH_CPU)
	$(VENV)/asr/bin/pip install $(PIP_FLAGS) -c $(ASR_LOCK) --no-deps -r asr-service/requirements-openai-whisper-cpu.txt
	touch $@

$(VENV)/chat/.installed: vision-chat-service/pyproject.toml vision-chat-service/requirements-embedded.txt protos/pyproject.toml $(CHAT_LOCK)
	$(PYTHON) -m venv $(VENV)/chat
	$(VENV)/chat/bin/pip install $(PIP_FLAGS) -c $(CHAT_LOCK) $(TORCH_CPU)
	$(VENV)/chat/bin/pip install $(PIP_FLAGS) -c $(CHAT_LOCK) -e protos -e vision-chat-service
	$(VENV)/chat/bin/pip install $(PIP_FLAGS) -c $(CHAT_LOCK) --no-deps -r vision-chat-service/requirements-embedded.txt
	touch $@

$(VENV)/gateway/.installed: gateway/pyproject.toml protos/pyproject.toml $(GATEWAY_LOCK)
	$(PYTHON) -m venv $(VENV)/gateway
	$(VENV)/gateway/bin/pip install $(PIP_FLAGS) -c $(GATEWAY_LOCK) -e protos -e gateway
	touch $@

# The QLoRA trainer (not a service: `make run` does not need it; the tests do),
# with its reports (TensorBoard events, the loss-curve PNG), which the tests check.
$(VENV)/trainer/.installed: trainer/pyproject.toml $(TRAINER_LOCK)
	$(PYTHON) -m venv $(VENV)/trainer
	$(VENV)/trainer/bin/pip install $(PIP_FLAGS) -c $(TRAINER_LOCK) $(TORCH_CPU)
	$(VENV)/trainer/bin/pip install $(PIP_FLAGS) -c $(TRAINER_LOCK) -e 'trainer[reports]'
	touch $@

$(VENV)/test/.installed: tests/requirements.txt protos/pyproject.toml $(TEST_LOCK)
	$(PYTHON) -m venv $(VENV)/test
	PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 $(VENV)/test/bin/pip install $(PIP_FLAGS) -c $(TEST_LOCK) -e protos -r tests/requirements.txt
	touch $@

# Regenerates the gRPC stubs after a .proto change.
protos: $(VENV)/test/.installed
	$(VENV)/test/bin/python protos/generate.py

# Keeps .data (conversations, users, stored images).
clean:
	rm -rf $(VENV) .run
