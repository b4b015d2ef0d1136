"""Encoder-decoder models: an encoder (Bi)LSTM, a decoder LSTM that reads a fixed context or attends
to the encoder at every step; a one-token classifier, the training graph for sequences (teacher
forcing), and greedy and beam decoding from the trained layers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pipeline.runtime import import_keras

import_keras()  # on the TensorFlow backend, TensorFlow first, without its start-up noise

import keras
import numpy as np
from keras import layers, ops

from pipeline.config import Config
from pipeline.errors import ConfigError
from pipeline.models.attention import BahdanauAttention
from pipeline.models.layers import PACKAGE, dense_options, input_block, recurrent_options
from pipeline.models.recurrent import recurrent_stack


@keras.saving.register_keras_serializable(package=PACKAGE)
class ConstantTokens(layers.Layer):
    """(batch, ...) -> (batch, length) int32 tokens all equal to `token`: the START input of a decoder."""

    def __init__(self, token: int, length: int = 1, **kwargs: Any):
        super().__init__(**kwargs)
        self.token, self.length = token, length

    def call(self, reference: Any) -> Any:
        return ops.full((ops.shape(reference)[0], self.length), self.token, dtype="int32")

    def compute_output_shape(self, reference_shape: tuple) -> tuple:
        return (reference_shape[0], self.length)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "token": self.token, "length": self.length}


@dataclass(frozen=True)
class Seq2SeqSettings:
    """[model.seq2seq]: the decoder of the encoder-decoder."""

    decoder_units: int = 64  # the decoder LSTM's size
    embedding_dim: int = 16  # the size of the previous-token embedding fed to the decoder
    attention: bool = True  # Bahdanau attention at every decoder step; false = the fixed context C only
    attention_units: int = 64  # the size of that attention's hidden layer

    def __post_init__(self) -> None:
        if min(self.decoder_units, self.embedding_dim, self.attention_units) < 1:
            raise ConfigError("model.seq2seq.decoder_units, embedding_dim and attention_units must be >= 1")


def seq2seq_settings(config: Config) -> Seq2SeqSettings:
    return config.model.own("seq2seq", Seq2SeqSettings)


# Token ids of every seq2seq decoder: classes (or activities) start at FIRST_CLASS_TOKEN.
PAD_TOKEN, START_TOKEN, END_TOKEN, FIRST_CLASS_TOKEN = 0, 1, 2, 3


@dataclass
class Seq2SeqParts:
    """The layers of an encoder-decoder, shared by the training graph and the inference models."""

    attention: BahdanauAttention | None
    bridge_h: layers.Dense
    bridge_c: layers.Dense
    embedding: layers.Embedding
    cell: layers.LSTMCell
    output: layers.Dense


def seq2seq_parts(config: Config, settings: Seq2SeqSettings, vocabulary: int, output_size: int) -> Seq2SeqParts:
    regularization = config.regularization
    dense = dense_options(regularization)
    return Seq2SeqParts(
        attention=BahdanauAttention(
            settings.attention_units, name="decoder_attention", kernel_regularizer=dense["kernel_regularizer"]
        )
        if settings.attention
        else None,
        bridge_h=layers.Dense(settings.decoder_units, activation="tanh", name="bridge_h", **dense),
        bridge_c=layers.Dense(settings.decoder_units, activation="tanh", name="bridge_c", **dense),
        embedding=layers.Embedding(vocabulary, settings.embedding_dim, name="token_embedding"),
        cell=layers.LSTMCell(settings.decoder_units, name="decoder_cell", **recurrent_options(regularization)),
        output=layers.Dense(output_size, activation="softmax", dtype="float32", name="token_probabilities", **dense),
    )


def seq2seq_encode(config: Config, x: Any) -> tuple[Any, Any]:
    """Encoder: (Bi)LSTM stack -> (hidden sequence h_1..h_T, fixed context C = the final states)."""
    sequences = recurrent_stack(x, config, return_sequences=True, prefix="encoder")
    units = config.model.units
    if config.model.bidirectional and config.model.merge_mode == "concat":
        # The forward half ends at the last step, the backward half at the first.
        context = layers.Concatenate(name="context")([sequences[:, -1, :units], sequences[:, 0, units:]])
    else:
        context = layers.Identity(name="context")(sequences[:, -1, :])
    return sequences, context


def seq2seq_step(
    parts: Seq2SeqParts, token_embedding: Any, state: list[Any], sequences: Any, context: Any
) -> tuple[Any, list[Any], Any]:
    """One decoder step: c_t from attention on s_{t-1} (or the fixed C), then LSTM, then softmax over tokens."""
    if parts.attention is not None:
        context, weights = parts.attention(sequences, state[0])
    else:
        weights = None
    output, state = parts.cell(ops.concatenate([token_embedding, context], axis=-1), state)
    return parts.output(ops.concatenate([output, context], axis=-1)), state, weights


def seq2seq_decode_teacher_forced(parts: Seq2SeqParts, tokens: Any, sequences: Any, context: Any, steps: int) -> Any:
    """Training graph: the decoder reads the true previous tokens (teacher forcing), unrolled for `steps`."""
    state = [parts.bridge_h(context), parts.bridge_c(context)]
    embedded = parts.embedding(tokens)
    outputs = []
    for step in range(steps):
        probabilities, state, _weights = seq2seq_step(parts, embedded[:, step], state, sequences, context)
        outputs.append(probabilities)
    return ops.stack(outputs, axis=1)


def seq2seq_classifier(config: Config, x: Any, settings: Seq2SeqSettings, num_classes: int) -> Any:
    sequences, context = seq2seq_encode(config, x)
    parts = seq2seq_parts(config, settings, vocabulary=FIRST_CLASS_TOKEN + num_classes, output_size=num_classes)
    start = ConstantTokens(START_TOKEN, 1, name="start_token")(x)
    probabilities = seq2seq_decode_teacher_forced(parts, start, sequences, context, steps=1)
    return layers.Identity(name="probabilities", dtype="float32")(probabilities[:, 0])


def build_seq2seq(
    config: Config,
    input_shape: tuple[int, int],
    num_tokens: int,
    max_output_length: int,
    mean: np.ndarray | None = None,
    variance: np.ndarray | None = None,
) -> keras.Model:
    """Encoder-decoder trained with teacher forcing: inputs (series, previous tokens), output (batch, steps, vocabulary).

    The vocabulary is PAD, START, END and `num_tokens` symbols from FIRST_CLASS_TOKEN on; targets
    are the input tokens shifted left by one, ending with END.
    """
    settings = seq2seq_settings(config)
    inputs, x = input_block(config, tuple(input_shape), mean, variance)
    sequences, context = seq2seq_encode(config, x)
    vocabulary = FIRST_CLASS_TOKEN + num_tokens
    parts = seq2seq_parts(config, settings, vocabulary, vocabulary)
    tokens = keras.Input(shape=(max_output_length,), dtype="int32", name="previous_tokens")
    probabilities = seq2seq_decode_teacher_forced(parts, tokens, sequences, context, max_output_length)
    return keras.Model(
        [inputs, tokens],
        probabilities,
        name="seq2seq_attention" if settings.attention else "seq2seq_fixed_context",
    )


@dataclass
class Decoded:
    """A decoded sequence: tokens (without START/END), its log-probability, and the alignment (steps, T) or None."""

    tokens: list[int]
    log_probability: float
    alignment: np.ndarray | None


class Seq2SeqDecoder:
    """Separate encoder and one-step decoder models built from a trained seq2seq model's layers.

    They are called directly in the decoding loop (calling `predict` per step would retrace).
    """

    def __init__(self, model: keras.Model):
        self.vocabulary = model.get_layer("token_embedding").input_dim
        sequences_layer = last_encoder_layer(model)
        self.encoder = keras.Model(model.inputs[0], [sequences_layer.output, model.get_layer("context").output])
        embedding = model.get_layer("token_embedding")
        attention = (
            model.get_layer("decoder_attention")
            if any(layer.name == "decoder_attention" for layer in model.layers)
            else None
        )
        parts = Seq2SeqParts(
            attention,
            model.get_layer("bridge_h"),
            model.get_layer("bridge_c"),
            embedding,
            model.get_layer("decoder_cell"),
            model.get_layer("token_probabilities"),
        )
        self.parts = parts
        sequences = keras.Input(shape=tuple(sequences_layer.output.shape[1:]), name="encoder_sequences")
        context = keras.Input(shape=tuple(model.get_layer("context").output.shape[1:]), name="encoder_context")
        units = parts.cell.units
        state = [keras.Input(shape=(units,), name="state_h"), keras.Input(shape=(units,), name="state_c")]
        token = keras.Input(shape=(), dtype="int32", name="token")
        probabilities, new_state, weights = seq2seq_step(parts, embedding(token), state, sequences, context)
        if weights is None:
            weights = ops.zeros_like(sequences[:, :, 0])  # no alignment without attention
        self.step = keras.Model([token, *state, sequences, context], [probabilities, *new_state, weights])
        self.bridge = keras.Model(context, [parts.bridge_h(context), parts.bridge_c(context)])
        self.has_attention = attention is not None

    def _start(self, series: np.ndarray) -> tuple[np.ndarray, np.ndarray, list[np.ndarray]]:
        sequences, context = (np.asarray(t) for t in self.encoder(series, training=False))
        state = [np.asarray(t) for t in self.bridge(context, training=False)]
        return sequences, context, state

    def greedy(self, series: np.ndarray, max_length: int) -> list[Decoded]:
        """Pick the most likely token at every step until END or `max_length` tokens."""
        sequences, context, state = self._start(series)
        count = len(series)
        token = np.full(count, START_TOKEN, np.int32)
        results = [Decoded([], 0.0, None) for _ in range(count)]
        alignments: list[list[np.ndarray]] = [[] for _ in range(count)]
        done = np.zeros(count, bool)
        for _step in range(max_length + 1):
            probabilities, h, c, weights = (
                np.asarray(t) for t in self.step([token, *state, sequences, context], training=False)
            )
            token = probabilities.argmax(-1).astype(np.int32)
            for index in np.flatnonzero(~done):
                results[index].log_probability += float(np.log(probabilities[index, token[index]] + 1e-12))
                alignments[index].append(weights[index])
                if token[index] == END_TOKEN or len(results[index].tokens) == max_length:
                    done[index] = True
                else:
                    results[index].tokens.append(int(token[index]))
            state = [h, c]
            if done.all():
                break
        for index, result in enumerate(results):
            result.alignment = np.stack(alignments[index]) if self.has_attention else None
        return results

    def beam(self, series: np.ndarray, max_length: int, width: int = 4) -> list[Decoded]:
        """Beam search per series, scored by log-probability. The greedy result is a candidate too,
        so beam search never returns a sequence less likely than greedy decoding's."""
        greedy = self.greedy(series, max_length)
        results = []
        for index in range(len(series)):
            best = self._beam_one(series[index : index + 1], max_length, width)
            results.append(best if best.log_probability >= greedy[index].log_probability else greedy[index])
        return results

    def _beam_one(self, series: np.ndarray, max_length: int, width: int) -> Decoded:
        sequences, context, state = self._start(series)
        # Each hypothesis: (log-probability, tokens, state, alignment rows)
        beams = [(0.0, [], state, [])]
        finished: list[tuple[float, list[int], list[np.ndarray]]] = []
        for _step in range(max_length + 1):
            tokens = np.array([b[1][-1] if b[1] else START_TOKEN for b in beams], np.int32)
            h = np.concatenate([b[2][0] for b in beams])
            c = np.concatenate([b[2][1] for b in beams])
            repeat = len(beams)
            probabilities, h_new, c_new, weights = (
                np.asarray(t)
                for t in self.step(
                    [tokens, h, c, np.repeat(sequences, repeat, 0), np.repeat(context, repeat, 0)], training=False
                )
            )
            candidates = []
            for row, (score, prefix, _state, rows) in enumerate(beams):
                log_p = np.log(probabilities[row] + 1e-12)
                for token in np.argsort(log_p)[::-1][:width]:
                    candidates.append((score + float(log_p[token]), prefix, int(token), row, rows + [weights[row]]))
            candidates.sort(key=lambda item: -item[0])
            beams = []
            for score, prefix, token, row, rows in candidates:
                if token == END_TOKEN or len(prefix) == max_length:
                    finished.append((score, prefix if token == END_TOKEN else prefix, rows))
                else:
                    beams.append((score, prefix + [token], [h_new[row : row + 1], c_new[row : row + 1]], rows))
                if len(beams) == width:
                    break
            # Stop when no open hypothesis can beat the best finished one (scores only fall).
            if not beams or (finished and max(f[0] for f in finished) >= beams[0][0]):
                break
        if not finished:
            finished = [(score, prefix, rows) for score, prefix, _state, rows in beams]
        score, tokens, rows = max(finished, key=lambda item: item[0])
        return Decoded(tokens, score, np.stack(rows) if self.has_attention else None)


def last_encoder_layer(model: keras.Model) -> layers.Layer:
    names = [
        layer.name
        for layer in model.layers
        if layer.name.startswith("encoder_") and not layer.name.endswith(("_dropout", "_shortcut"))
    ]
    return model.get_layer(names[-1])
