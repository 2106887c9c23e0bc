"""bigjax: Big Cooperative Learning in JAX/Flax."""
from setuptools import find_packages, setup

setup(
    name="bigjax",
    version="0.1.0",
    description="JAX/Flax research code for Big Cooperative Learning (Cong, 2024)",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    packages=find_packages(include=["bigjax", "bigjax.*", "experiments", "experiments.*",
                                    "configs", "configs.*"]),
    package_data={"bigjax.data": ["*.npz", "README.md"]},
    python_requires=">=3.10",
    install_requires=[
        "jax>=0.4.35",
        "flax>=0.10",
        "optax>=0.2.2",
        "orbax-checkpoint>=0.11",
        "numpy>=1.26",
        "scipy>=1.11",
        "ml_collections>=0.1.1",
        "absl-py>=1.4",
        "matplotlib>=3.8",
        "pillow>=10.0",
        "tqdm>=4.66",
    ],
    extras_require={"test": ["pytest>=8.0"]},
)
