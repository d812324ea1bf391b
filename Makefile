# Everything a new machine needs, from a clone: `make demo`, then `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
CORPUS := data/speech_corpus

.PHONY: install system-deps corpus demo test test-fast bench clean

# Re-installs only when setup.py or constraints.txt changes (the venv is reused, so re-running
# is cheap). setup.py states version ranges; constraints.txt pins what the suite is tested with.
$(STAMP): setup.py constraints.txt
	[ -x $(PY) ] || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c constraints.txt -e '.[test,lm,hf,plot]'
	touch $@

system-deps:
	@command -v espeak-ng >/dev/null && command -v sox >/dev/null && command -v ffmpeg >/dev/null || \
	  ($(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq espeak-ng sox ffmpeg)

install: $(STAMP) system-deps

corpus: install
	$(PY) examples/make_speech_corpus.py $(CORPUS)

demo: corpus
	$(PY) examples/pretrain_demo.py --data $(CORPUS)

test: install
	$(PY) -m pytest -q tests

test-fast: install
	$(PY) -m pytest -q -m "not slow" tests

bench: corpus
	$(PY) benchmarks/pretraining_throughput.py

clean:
	rm -rf checkpoints demo outputs
