"""Data: loaders that return numpy arrays, and the files bigjax ships.

mnist        MNIST digits from the bundled subset, IDX files, an .npz or tfds (mnist_files
             reads the IDX and .npz files)
pixels       resizing, and uint8 pixels <-> the [-1, 1] range of the models
celeba       CelebA faces, cropped, resized and cached once as a memory map, from a folder
             (celeba_folder) or tfds (celeba_tfds); the crop and the cache: celeba_prepare
augment      on-device augmentation (random shifts)
glue         GLUE RTE/MRPC/SST-2 and the WordNet text tasks, from TSV files or tfds
tokenizer    XLNet's tokeniser and pair format; training a SentencePiece vocabulary

mnist_8k.npz  8,000 real MNIST digits, read by `bigjax.data.mnist.load("bundled")`; see
              README.md here for its source and licence.
wordnet/      the WordNet text tasks lexname and hypernym (train, dev), with WordNet's
              licence; `glue.wordnet_dir(task)`.
"""
