# The two commands a newcomer types (see README): `make demo` and `make test`.
# PY can point at any Python 3.10+ interpreter or environment (conda, venv, system).
PY ?= python3
PIP = $(PY) -m pip install --disable-pip-version-check -q

.PHONY: install install-test demo test bench gpu-check notebooks slim-notebooks

# torch/torchvision pinned: these exact wheels are what we test on (an unpinned torch pulls a multi-GB build).
# facenet-pytorch comes last and with --no-deps: its metadata pins torch<2.3 and numpy<2, yet it runs with
# current versions; installed last, no later pip run re-checks those pins and prints a conflict block.
install:
	$(PIP) torch==2.14.1 torchvision==0.29.1
	$(PIP) -e ".[notebooks,test]"
	$(PIP) --no-deps facenet-pytorch==2.6.0

install-test:
	$(PIP) torch==2.14.1 torchvision==0.29.1
	$(PIP) -e ".[test]"
	$(PIP) --no-deps facenet-pytorch==2.6.0

demo: install
	$(PY) -m facestyle demo --profile mini

# FACESTYLE_FAST=1: notebooks run every cell with small counts under nbval (tests/ and notebooks/ both run);
# their figures go to a scratch folder so a test run never rewrites the committed ones.
test: install-test
	FACESTYLE_FAST=1 FACESTYLE_FIGURES=$$(mktemp -d) $(PY) -m pytest -q

bench:
	$(PY) -m facestyle bench --size 256 --batch 16

# The paper's setting timed on one CUDA GPU, random weights of the official shapes, no files or network needed
# (sized for at most 8 minutes on one H100, not yet run on one; on a CPU it runs the 32 px rehearsal profile).
gpu-check:
	$(PY) -m facestyle gpu-check --json runs/gpu-check.json

# Re-run every notebook in full mode and store its outputs (what a reader sees on GitHub).
notebooks:
	for nb in notebooks/[0-9]*.ipynb; do $(PY) -c "from facestyle.notebook import execute; execute('$$nb')" || exit 1; done

# Shrink the figures already stored in the notebooks to screen size, so diffs stay readable (a fresh run stores
# them small through notebook.show); the full-resolution files stay in figures/.
slim-notebooks:
	$(PY) -m facestyle.notebook slim notebooks/[0-9]*.ipynb
