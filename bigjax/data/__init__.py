"""Data files shipped with bigjax (a package so that setuptools installs them).

  mnist_8k.npz  8,000 real MNIST digits, read by `bigjax.mnist.load("bundled")`; see README.md
                here for its source and licence.
"""
