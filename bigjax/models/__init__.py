"""Flax (Linen) models of bigjax. Sizes come from constructor arguments; no model reads a config."""

from bigjax.models.biglearn_gan import Discriminator, Generator, NoiseMapping
from bigjax.models.patches import patchify, unpatchify, patch_masks_to_pixels
from bigjax.models.transformer import Encoder, EncoderBlock
from bigjax.models.two_stream import TwoStreamTransformer
from bigjax.models.vq import VQDecoder, VQEncoder
from bigjax.models.xlnet import XLNet, XLNetModel

__all__ = [
    "Discriminator",
    "Encoder",
    "EncoderBlock",
    "Generator",
    "NoiseMapping",
    "TwoStreamTransformer",
    "VQDecoder",
    "VQEncoder",
    "XLNet",
    "XLNetModel",
    "patch_masks_to_pixels",
    "patchify",
    "unpatchify",
]
