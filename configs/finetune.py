"""Big learning as a fine-tuning strategy (paper App. E.2): XLNet fine-tuned with cross-entropy
(FT, Eq. (16)) or with big-learn (Eq. (17): FT + beta * the permutation objective Eq. (15) over
the text and the label as one sequence; bigjax.finetuning), and pretraining from scratch with
Eq. (15) (`mode="pretrain"`).

Launch (ARG is one of the variants below; `lexname` is the default):
  # one run (beta = 0 is FT):
  python -m experiments.finetune --config configs/finetune.py:rte --workdir /tmp/rte_run \
      --config.model_dir=/path/to/xlnet-base-cased --config.data.task_dir=/path/to/glue_data/RTE \
      --config.beta=0.4
  # Table 3's grid, Table 4 and Fig. 18 (resumable):
  python -m experiments.finetune_sweep --config configs/finetune.py:rte --workdir /tmp/rte_sweep \
      --config.model_dir=/path/to/xlnet-base-cased --config.data.task_dir=/path/to/glue_data/RTE
  # the WordNet comparison: pretrain a small XLNet on the glosses, then the grid on each task:
  python -m experiments.finetune --config configs/finetune.py:pretrain --workdir /tmp/wn_lm \
      --config.data.corpus=/path/to/wordnet/corpus.txt
  python -m experiments.finetune_sweep --config configs/finetune.py:lexname \
      --workdir /tmp/lexname_sweep --config.model_dir=/tmp/wn_lm/model
  # score any TSV in the task's layout with a finished run:
  python -m experiments.finetune_eval --workdir /tmp/rte_run --data FILE.tsv --out /tmp/scores
A run resumes by itself from the newest checkpoint in --workdir; a sweep never redoes a finished
run and resumes an interrupted one.

Variants:
  rte, mrpc, sst2   GLUE on xlnet-base-cased (App. E.2): max length 128, batch 32, the Table 3
                    grid in `sweep` (RTE/MRPC: lr {2,4,6}e-5 x epochs {3,4,7,10,15} x warm-up
                    {0,120} x beta {0,.2,.4,.6,.8}; SST-2: epochs {2,3,4}, warm-up {0,1200}, beta
                    {0,.2,.4}); one seed. Needs --config.model_dir and --config.data.task_dir.
  lexname, hypernym the WordNet tasks shipped with bigjax (bigjax/data/wordnet), on the model
                    `pretrain` writes: 3 lr x 2 epoch counts x 5 betas x 2 seeds = 60 runs.
  pretrain          Eq. (15) from scratch on a text corpus (the 112k WordNet glosses): a
                    SentencePiece vocabulary of 4,000 pieces, then a 2-layer XLNet (d 128) for
                    one epoch; writes <workdir>/model, a Hugging Face directory.
  smoke             a tiny fine-tuning run for tests (needs --config.model_dir).
  smoke_pretrain    a tiny pretraining run for tests (needs --config.data.corpus).

Expected results: benchmarks/RESULTS.md, "Big learning as a fine-tuning strategy".
"""

from __future__ import annotations

import ml_collections

from configs import common

VARIANTS = ("rte", "mrpc", "sst2", "lexname", "hypernym", "pretrain", "smoke", "smoke_pretrain")
MODES = ("finetune", "pretrain")


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  c = common.new_config(__file__, arg, VARIANTS, default="lexname")
  variant = c.variant
  c.mode = "pretrain" if variant in ("pretrain", "smoke_pretrain") else "finetune"
  # The classification task (bigjax.data.glue.TASKS): rte, mrpc, sst2, lexname, hypernym.
  c.task = variant if variant in ("rte", "mrpc", "sst2", "hypernym") else "lexname"
  # Fine-tuning: a Hugging Face XLNet directory (config.json, model.safetensors or
  # pytorch_model.bin, spiece.model), e.g. xlnet-base-cased or <pretrain workdir>/model. A
  # classifier head absent from it is initialised as HF does.
  c.model_dir = ""

  c.seed = 0  # the new heads, data order, dropout and orders follow it
  c.batch_size = 32  # global batch (split over all devices)
  c.num_epochs = 3  # passes over the training set (the last batch dropped)
  c.learning_rate = 2e-5  # peak learning rate: linear warm-up, then linear decay to 0
  c.warmup_steps = 0  #   over the run (HF run_glue's schedule; Table 3's warm-up)
  c.weight_decay = 0.0  # AdamW's decoupled weight decay (XLNet's fine-tuning: 0)
  c.grad_clip = 1.0  # global gradient-norm clipping
  c.beta = 0.0  # beta_BigLearn of Eq. (17); 0: FT (Eq. (16)) exactly
  # The pretrained body's (the transformer's) learning rate times this; the new heads and the
  # label embedding keep the full rate (experiments.finetune_step).
  c.body_lr_scale = 1.0
  c.keep_checkpoints = 1  # checkpoints kept (one per epoch is saved; the newest kept)
  c.log_every = 20  # metrics.jsonl row every N steps
  c.eval_batch_size = 64  # dev / scoring batch
  common.add_process_fields(c)  # c.distributed

  c.plm = ml_collections.ConfigDict()
  # q(z) of Eq. (15) (bigjax.finetuning.plm_tasks): a uniformly random order over the positions;
  # the last `target_fraction` of the candidates (text tokens and the label slot) in it are
  # targets (1: all, App. E.1's full permutation LM).
  c.plm.target_fraction = 1.0
  c.plm.label_last_prob = 0.0  # probability of the label slot forced last in the order
  # Eq. (15)'s term is estimated on the first `batch_size` examples of each (random) batch; 0:
  # all of them. Fewer: a cheaper, noisier estimate of the same expectation.
  c.plm.batch_size = 0
  # Big-learn's mechanisms apart (experiments.finetune_step; no effect on a beta = 0 run):
  # label_weight None: one mean over all targets (Eq. (15) as written); w >= 0: text targets'
  # mean + w * the label's mean. label_only: the label is Eq. (15)'s only target, predicted from
  # a random subset of the text. separate_adam: Eq. (15)'s gradient gets its own Adam
  # statistics (direction Adam(Eq. 16) + beta * Adam(Eq. 15)).
  c.plm.label_weight = ml_collections.config_dict.placeholder(float)
  c.plm.label_only = False
  c.plm.separate_adam = False

  c.data = ml_collections.ConfigDict()
  # The task's folder with train.tsv and dev.tsv in GLUE's layout (bigjax.data.glue); "" for
  # lexname / hypernym reads the copies shipped in bigjax/data/wordnet.
  c.data.task_dir = ""
  c.data.max_length = 128  # tokens per example, <cls> included (longer: truncated)
  c.data.train_split = "train"
  c.data.dev_split = "dev"  # the split tuned on (a test split is never read here)
  # Fine-tune on this many training examples (a fixed, seeded subset: the same for every method
  # and seed, and part of every larger one; bigjax.data.glue.subset); None: all of them.
  c.data.train_limit = ml_collections.config_dict.placeholder(int)
  # Pretraining only: a text file, one sentence per line.
  c.data.corpus = ""
  c.data.heldout = 2_000  # corpus lines held out (the LM loss and completions)
  c.data.pair_prob = 0.5  # share of examples that are two consecutive lines (A <sep> B)
  c.data.vocab_size = 4_000  # SentencePiece pieces trained on the corpus

  # The XLNet trained from scratch (pretraining only; fine-tuning takes model_dir's).
  c.model = ml_collections.ConfigDict()
  c.model.d_model = 128
  c.model.n_layer = 2
  c.model.n_head = 2
  c.model.d_inner = 512
  c.model.dropout = 0.1
  c.eval_every = 0  # pretraining: held-out LM loss every N steps (0: at the end)
  c.num_completions = 6  # pretraining: held-out glosses completed at the end

  # The grid of experiments.finetune_sweep (Table 3): every combination is one run.
  c.sweep = ml_collections.ConfigDict()
  c.sweep.learning_rates = (2e-5, 4e-5, 6e-5)
  c.sweep.num_epochs = (3, 4, 7, 10, 15)
  c.sweep.warmup_steps = (0, 120)
  c.sweep.betas = (0.0, 0.2, 0.4, 0.6, 0.8)
  c.sweep.seeds = (0,)
  c.sweep.train_limits = (None,)  # data.train_limit per run (None: the whole training split)

  if variant == "sst2":
    c.sweep.num_epochs = (2, 3, 4)
    c.sweep.warmup_steps = (0, 1200)
    c.sweep.betas = (0.0, 0.2, 0.4)
  elif variant in ("lexname", "hypernym"):
    c.data.max_length = 32 if variant == "lexname" else 40
    c.update(dict(learning_rate=2e-4, num_epochs=2, warmup_steps=30))
    c.plm.batch_size = 8
    c.sweep.update(
        dict(learning_rates=(1e-4, 2e-4, 4e-4), num_epochs=(1, 2), warmup_steps=(30,), seeds=(0, 1))
    )
  elif variant == "pretrain":
    c.update(
        dict(
            batch_size=64,
            num_epochs=1,
            learning_rate=1e-3,
            warmup_steps=500,
            weight_decay=0.01,
            eval_every=1_000,
            log_every=50,
        )
    )
    c.data.max_length = 64
  elif variant == "smoke":
    c.update(
        dict(
            batch_size=8,
            num_epochs=2,
            learning_rate=1e-3,
            warmup_steps=2,
            eval_batch_size=16,
            log_every=2,
            beta=0.5,
        )
    )
    c.data.max_length = 24
    c.plm.batch_size = 4
    c.sweep.update(
        dict(
            learning_rates=(1e-3,),
            num_epochs=(1,),
            warmup_steps=(0,),
            betas=(0.0, 0.5),
            seeds=(0, 1),
        )
    )
  elif variant == "smoke_pretrain":
    c.update(
        dict(
            batch_size=8,
            num_epochs=1,
            learning_rate=1e-3,
            warmup_steps=2,
            eval_batch_size=16,
            log_every=2,
            eval_every=4,
            num_completions=2,
        )
    )
    c.data.update(dict(max_length=24, heldout=16, vocab_size=120))
    c.model.update(dict(d_model=16, n_layer=1, n_head=2, d_inner=32))
  return c
