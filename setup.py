"""Packaging for captum-ext (import name ``captum_ext``)."""

import os
import re

from setuptools import find_packages, setup

HERE = os.path.dirname(os.path.abspath(__file__))


def _version() -> str:
    with open(os.path.join(HERE, "captum_ext", "__init__.py"), encoding="utf-8") as f:
        match = re.search(r'^__version__ = "([^"]+)"', f.read(), re.M)
    if match is None:
        raise RuntimeError("captum_ext/__init__.py has no __version__")
    return match.group(1)


def _readme() -> str:
    with open(os.path.join(HERE, "README.md"), encoding="utf-8") as f:
        return f.read()


VISION = ["torchvision"]
#: What the `captum-ext report` command needs beyond the core (ResNet-18, the Digits dataset).
REPORT = VISION + ["scikit-learn>=1.2"]
TEST = [
    "pytest>=7",
    "nbclient>=0.7",
    "nbformat>=5",
    "ipykernel>=6",
    "scikit-learn>=1.2",
    "scikit-image>=0.20",
    "matplotlib>=3.6",
] + VISION
DEV = TEST + ["ruff>=0.5"]

setup(
    name="captum-ext",
    version=_version(),
    description=(
        "Captum-compatible LEG/LEG-TV, CAFO/CASO, RelEx, ParameterSaliency, PILCRO "
        "and evaluation metrics"
    ),
    long_description=_readme(),
    long_description_content_type="text/markdown",
    license="BSD-3-Clause",
    python_requires=">=3.10",
    packages=find_packages(include=["captum_ext", "captum_ext.*"]),
    install_requires=[
        "torch>=2.3",
        "captum>=0.8,<0.10",
        "numpy>=1.23",
        "scipy>=1.10",
        "cvxpy>=1.4",
        "matplotlib>=3.6",
        "tqdm",
    ],
    extras_require={"vision": VISION, "report": REPORT, "test": TEST, "dev": DEV},
    entry_points={"console_scripts": ["captum-ext=captum_ext.report.cli:main"]},
    classifiers=[
        "Programming Language :: Python :: 3",
        "Topic :: Scientific/Engineering :: Artificial Intelligence",
    ],
)
