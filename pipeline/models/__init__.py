"""The shared models package: every architecture of the lecture, one registry.

`from pipeline import models` gives the public API below; each architecture lives in its own file:
  layers.py       regularizers from config, the input block (normalization, augmentation, noise), the head
  recurrent.py    lstm, gru, bilstm (halves may differ), stacked, deep_input/deep_output, deep_transition, cnn_lstm
  attention.py    Bahdanau (additive) attention and the attention-pooling classifier
  seq2seq.py      encoder-decoder: one-token classifier, the sequence training graph, greedy and beam decoding
  registry.py     MODELS by name, build_model, save_model / load_model, `python -m pipeline.models`
  diagnostics.py  attention weights, input and weight gradients, fused cuDNN path reports
  bptt.py         backpropagation through time by hand in NumPy, the lecture's equations (checked against autodiff)
  augment.py      augmentation layers and noised copies
  consistency.py  noise-consistency training: each batch seen clean and noised, a Jensen-Shannon term between them
  baselines.py    the non-recurrent peers (logistic regression, random forest, MiniRocket, MultiRocket-Hydra, QUANT)
  rocket.py       MultiRocket-Hydra in bounded memory: float32 batches and the ridge in its dual
  blend.py        the noise-aware blend of make blend: member weights from each series' estimated noise level

Models (see MODELS, or `python -m pipeline.models`):
  lstm, gru          one recurrent layer: the course's baseline
  bilstm             bidirectional layers whose forward and backward cells may differ in type and size
  stacked            N recurrent layers, each optionally bidirectional, optional residual shortcuts
  deep_input         deep input-to-hidden: an MLP at every time step before the recurrence (Pascanu et al.)
  deep_output        deep hidden-to-output: an MLP between the recurrence and the softmax
  deep_transition    a recurrent cell with an L-layer MLP between h(t-1) and h(t), optional shortcut
  attention          a (Bi)LSTM encoder with Bahdanau (additive) attention pooling over time
  seq2seq            encoder-decoder (Bi)LSTM -> LSTM, decoding one class token; with attention or a fixed context
  cnn_lstm           DeepConvLSTM-style: 1-D convolutions, then recurrent layers

Custom layers use `keras.ops` only (not tied to TensorFlow) and are registered for `.keras` loading:
import this package before `keras.models.load_model` (`load_model` does).
"""

from pipeline.models.attention import AttentionSettings, BahdanauAttention
from pipeline.models.diagnostics import (
    FUSED_KERNELS,
    attention_model,
    fused_path_report,
    input_gradients,
    observed_kernel_paths,
    recurrent_layers,
    warn_if_not_fused,
    weight_gradients,
)
from pipeline.models.layers import PACKAGE, classifier_head, dense_options, input_block, recurrent_options
from pipeline.models.recurrent import (
    CELLS,
    BilstmSettings,
    CnnLstmSettings,
    DeepTransitionCell,
    DeepTransitionSettings,
    HeterogeneousBidirectional,
    replace_model,
)
from pipeline.models.registry import (
    MODELS,
    Body,
    ModelSpec,
    build_model,
    describe,
    effective_config,
    load_model,
    main,
    own_settings,
    save_model,
)
from pipeline.models.seq2seq import (
    END_TOKEN,
    FIRST_CLASS_TOKEN,
    PAD_TOKEN,
    START_TOKEN,
    ConstantTokens,
    Decoded,
    Seq2SeqDecoder,
    Seq2SeqSettings,
    build_seq2seq,
)

__all__ = [
    "AttentionSettings",
    "BahdanauAttention",
    "BilstmSettings",
    "Body",
    "CnnLstmSettings",
    "DeepTransitionSettings",
    "Seq2SeqSettings",
    "own_settings",
    "CELLS",
    "ConstantTokens",
    "Decoded",
    "DeepTransitionCell",
    "END_TOKEN",
    "FIRST_CLASS_TOKEN",
    "FUSED_KERNELS",
    "HeterogeneousBidirectional",
    "MODELS",
    "ModelSpec",
    "PACKAGE",
    "PAD_TOKEN",
    "START_TOKEN",
    "Seq2SeqDecoder",
    "attention_model",
    "build_model",
    "build_seq2seq",
    "classifier_head",
    "dense_options",
    "describe",
    "effective_config",
    "fused_path_report",
    "input_block",
    "input_gradients",
    "load_model",
    "main",
    "observed_kernel_paths",
    "recurrent_layers",
    "recurrent_options",
    "replace_model",
    "save_model",
    "warn_if_not_fused",
    "weight_gradients",
]
