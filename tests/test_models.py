"""Model tests: every registered model builds, learns, saves and reloads in a fresh process; the
lecture's formulas are checked against NumPy; seq2seq decodes a toy task."""

from __future__ import annotations

import subprocess
import sys
import warnings
from pathlib import Path

import keras
import numpy as np
import pytest

from pipeline import models
from pipeline.config import load_config
from pipeline.errors import ConfigError
from tests import toy_architecture

toy_architecture.register()  # an architecture added as a user adds one: every model test below covers it
CLASSROOM, RAW = (5, 9), (128, 9)
MODEL_NAMES = list(models.MODELS)
# The models with layers or cells of their own (the others are Keras' own LSTM, GRU, Conv1D and Dense
# stacks): the deep-transition cell, additive attention, the seq2seq decoder.
OWN_LAYERS = ["deep_transition", "attention", "seq2seq"]
SMALL = [
    "model.units=8",
    "model.attention.units=8",
    "model.seq2seq.attention_units=8",
    "model.seq2seq.decoder_units=8",
    "model.cnn_lstm.filters=8",
    "model.seq2seq.embedding_dim=4",
]


def config_for(name: str, *overrides: str):
    return load_config(None, [f"model.name={name}", *SMALL, *overrides])


def separable(
    shape: tuple[int, int], count: int = 96, classes: int = 3, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Noise plus a class-specific offset on one channel: learnable in a few steps by any model."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, classes, count)
    series = rng.normal(size=(count, *shape)).astype(np.float32)
    series[np.arange(count), :, labels] += 2.0
    return series, labels


def build_every_model(folder: Path, shape: tuple[int, int], epochs: int) -> dict[tuple[str, tuple[int, int]], dict]:
    """Every registered model built for `shape`, trained `epochs` epochs on a separable problem (0: built
    only) and saved; its output on 8 series kept for the reload checks."""
    results = {}
    for name in MODEL_NAMES:
        keras.utils.set_random_seed(0)
        series, labels = separable(shape)
        mean, variance = series.reshape(-1, shape[1]).mean(0), series.reshape(-1, shape[1]).var(0)
        model = models.build_model(config_for(name), shape, 3, mean, variance)
        model.compile(optimizer=keras.optimizers.Adam(0.01), loss="sparse_categorical_crossentropy")
        history = model.fit(series, labels, batch_size=32, epochs=epochs, verbose=0, shuffle=False) if epochs else None
        path = folder / f"{name}_{shape[0]}.keras"
        model.save(path)
        results[(name, shape)] = {
            "loss": history.history["loss"] if history else [],
            "path": path,
            "input": series[:8],
            # a direct call, not predict(): no predict function to trace for each model
            "prediction": keras.ops.convert_to_numpy(model(series[:8], training=False)),
            "output_shape": tuple(model.output.shape),
        }
    return results


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> dict[tuple[str, tuple[int, int]], dict]:
    """Every model trained 4 epochs on 128x9 windows (the raw competition's shape: every layer meets
    128 steps) and saved."""
    return build_every_model(tmp_path_factory.mktemp("models"), RAW, epochs=4)


@pytest.fixture(scope="module")
def built_for_classroom(tmp_path_factory: pytest.TempPathFactory) -> dict[tuple[str, tuple[int, int]], dict]:
    """Every model built for 5x9 classroom series and saved, untrained (a build and a call trace nothing)."""
    return build_every_model(tmp_path_factory.mktemp("models"), CLASSROOM, epochs=0)


@pytest.fixture(scope="module")
def trained_on_classroom(tmp_path_factory: pytest.TempPathFactory) -> dict[tuple[str, tuple[int, int]], dict]:
    """Every model trained 4 epochs on 5x9 classroom series and saved (the full tier's checks)."""
    return build_every_model(tmp_path_factory.mktemp("models"), CLASSROOM, epochs=4)


def outputs_are_probabilities(result: dict) -> None:
    assert result["output_shape"] == (None, 3)
    assert (result["prediction"] >= 0).all()
    np.testing.assert_allclose(result["prediction"].sum(-1), 1.0, rtol=1e-5)


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_model_builds_and_learns_on_raw_windows_and_builds_for_classroom_series(
    trained, built_for_classroom, name: str
):
    result = trained[(name, RAW)]
    outputs_are_probabilities(result)
    assert result["loss"][-1] < result["loss"][0], result["loss"]
    outputs_are_probabilities(built_for_classroom[(name, CLASSROOM)])


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_model_learns_on_classroom_series(trained_on_classroom, name: str):
    result = trained_on_classroom[(name, CLASSROOM)]
    outputs_are_probabilities(result)
    assert result["loss"][-1] < result["loss"][0], result["loss"]


def test_models_reload_in_a_fresh_process_with_identical_predictions(trained, built_for_classroom, tmp_path: Path):
    cases = [*trained.values(), *built_for_classroom.values()]
    for index, case in enumerate(cases):
        np.save(tmp_path / f"input_{index}.npy", case["input"])
    script = (
        "import sys, keras, numpy as np\n"
        "from pipeline.models import load_model\n"
        f"paths = {[str(c['path']) for c in cases]!r}\n"
        "for index, path in enumerate(paths):\n"
        f"    x = np.load(r'{tmp_path}/input_%d.npy' % index)\n"
        f"    np.save(r'{tmp_path}/output_%d.npy' % index, keras.ops.convert_to_numpy(load_model(path)(x, training=False)))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script],
        cwd=Path(__file__).resolve().parents[1],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    for index, case in enumerate(cases):
        np.testing.assert_allclose(
            np.load(tmp_path / f"output_{index}.npy"),
            case["prediction"],
            rtol=1e-5,
            atol=1e-6,
            err_msg=str(case["path"]),
        )


OTHER_BACKEND = """
import sys, numpy as np
from pipeline.models import input_gradients, load_model
folder = sys.argv[1]
for index, path in enumerate(sys.argv[2:]):
    model = load_model(path)
    series, targets = np.load(f"{folder}/input_{index}.npy"), np.load(f"{folder}/targets_{index}.npy")
    np.save(f"{folder}/probabilities_{index}.npy", np.asarray(model.predict(series, verbose=0)))
    np.save(f"{folder}/gradients_{index}.npy", input_gradients(model, series, targets))
"""


@pytest.mark.slow
def test_models_with_layers_of_their_own_predict_and_differentiate_the_same_on_jax_and_torch(
    trained_on_classroom, tmp_path: Path
):
    """The TensorFlow-trained .keras files of the models with layers of their own (and the statistics
    branch), loaded on JAX and PyTorch: the same probabilities, and the same input gradients through
    each backend's own autodiff (what training there differentiates)."""
    from tests.conftest import on_backend

    shape = (5, 9)  # the layers do the same at every step: five steps prove it, and JAX compiles them fast
    paths = [trained_on_classroom[(name, shape)]["path"] for name in OWN_LAYERS]
    keras.utils.set_random_seed(0)
    statistics = models.build_model(config_for("bilstm", "model.window_stats=true"), shape, 3)
    paths.append(tmp_path / "statistics.keras")
    statistics.save(paths[-1])
    expected = []
    for index, path in enumerate(paths):
        model = models.load_model(str(path))
        series, _ = separable(shape, count=16, seed=index + 1)
        targets = keras.utils.to_categorical(np.arange(16) % 3, 3)
        np.save(tmp_path / f"input_{index}.npy", series)
        np.save(tmp_path / f"targets_{index}.npy", targets)
        gradients = models.input_gradients(model, series, targets)
        assert np.abs(gradients).max() > 0, path
        expected.append((model.predict(series, verbose=0), gradients))
    for backend in ("jax", "torch"):
        result = on_backend(backend, sys.executable, "-c", OTHER_BACKEND, str(tmp_path), *map(str, paths))
        assert result.returncode == 0, result.stderr[-3000:]
        for index, (probabilities, gradients) in enumerate(expected):
            where = f"{paths[index].name} on {backend}"
            np.testing.assert_allclose(
                np.load(tmp_path / f"probabilities_{index}.npy"), probabilities, atol=1e-5, err_msg=where
            )
            np.testing.assert_allclose(
                np.load(tmp_path / f"gradients_{index}.npy"), gradients, rtol=1e-3, atol=1e-6, err_msg=where
            )


def test_deep_transition_cell_matches_the_lectures_formula():
    rng = np.random.default_rng(1)
    units, inputs, steps, depth = 4, 3, 6, 3
    for shortcut in (False, True):
        cell = models.DeepTransitionCell(units, transition_layers=depth, shortcut=shortcut)
        layer = keras.layers.RNN(cell, return_sequences=True)
        x = rng.normal(size=(2, steps, inputs)).astype(np.float32)
        layer(x)  # build
        weights = [rng.normal(scale=0.5, size=w.shape).astype(np.float32) for w in layer.get_weights()]
        layer.set_weights(weights)
        kernel, transition, biases = (
            cell.kernel.numpy(),
            [w.numpy() for w in cell.transition_kernels],
            [b.numpy() for b in cell.biases],
        )
        h = np.zeros((2, units))
        expected = []
        for t in range(steps):
            z = np.tanh(h @ transition[0] + x[:, t] @ kernel + biases[0])  # phi_1(W_1^T h + U^T x)
            for level in range(1, depth - 1):
                z = np.tanh(z @ transition[level] + biases[level])
            pre = z @ transition[-1] + biases[-1]
            if shortcut:
                pre = pre + h @ cell.shortcut_kernel.numpy()
            h = np.tanh(pre)
            expected.append(h)
        np.testing.assert_allclose(np.asarray(layer(x)), np.stack(expected, 1), rtol=1e-4, atol=1e-5)


def test_attention_weights_are_a_distribution_over_time():
    series, _labels = separable((20, 9), count=6)
    model = models.build_model(config_for("attention"), (20, 9), 3)
    weights = np.asarray(models.attention_model(model)(series))
    assert weights.shape == (6, 20)
    assert (weights >= 0).all()
    np.testing.assert_allclose(weights.sum(-1), 1.0, rtol=1e-5)


def test_heterogeneous_bidirectional_fits_and_reloads(tmp_path: Path):
    config = config_for(
        "bilstm", "model.layers=1", "model.cell=lstm", "model.bilstm.backward_cell=gru", "model.bilstm.backward_units=5"
    )
    series, labels = separable((12, 9))
    model = models.build_model(config, (12, 9), 3)
    layer = model.get_layer("bidirectional_1")
    assert isinstance(layer.backward_layer, keras.layers.GRU) and layer.backward_layer.units == 5
    assert layer.output.shape[-1] == 8 + 5  # the sum of both halves
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    model.fit(series, labels, epochs=1, verbose=0)
    model.save(tmp_path / "hetero.keras")
    reloaded = models.load_model(str(tmp_path / "hetero.keras"))
    np.testing.assert_allclose(reloaded.predict(series, verbose=0), model.predict(series, verbose=0), rtol=1e-5)
    with pytest.raises(ValueError, match="needs equal forward and backward sizes"):
        models.build_model(config_for("bilstm", "model.bilstm.backward_units=5", "model.merge_mode=sum"), (12, 9), 3)


def test_regularizers_reach_the_model_and_scale():
    def penalty_sum(strength: float) -> float:
        keras.utils.set_random_seed(3)
        model = models.build_model(
            config_for(
                "stacked",
                f"regularization.l2={strength}",
                f"regularization.recurrent_l2={strength}",
                f"regularization.bias_l2={strength}",
            ),
            (5, 9),
            3,
        )
        model(np.ones((1, 5, 9), np.float32))
        return float(sum(np.asarray(loss) for loss in model.losses)), len(model.losses)

    (small, count), (large, _) = penalty_sum(1e-3), penalty_sum(2e-3)
    assert count >= 3 * 2  # kernel, recurrent kernel and bias of each recurrent half at least
    assert large == pytest.approx(2 * small, rel=1e-5)
    model = models.build_model(
        config_for(
            "bilstm",
            "regularization.l1=1e-4",
            "regularization.l2=1e-4",
            "regularization.max_norm=3",
            "regularization.gaussian_noise=0.3",
            "regularization.dropout=0.2",
        ),
        (5, 9),
        3,
    )
    forward = model.get_layer("bidirectional_1").forward_layer
    assert isinstance(forward.cell.kernel_regularizer, keras.regularizers.L1L2)
    assert isinstance(forward.cell.kernel_constraint, keras.constraints.MaxNorm)
    assert model.get_layer("gaussian_noise").stddev == 0.3
    assert any(isinstance(layer, keras.layers.Dropout) for layer in model.layers)


def test_noise_and_dropout_act_only_in_training():
    model = models.build_model(
        config_for("bilstm", "regularization.gaussian_noise=1.0", "regularization.dropout=0.5"), (5, 9), 3
    )
    x = np.ones((4, 5, 9), np.float32)
    np.testing.assert_array_equal(np.asarray(model(x, training=False)), np.asarray(model(x, training=False)))
    assert not np.allclose(np.asarray(model(x, training=True)), np.asarray(model(x, training=False)))


def test_fused_path_report_and_a_single_warning():
    default = models.build_model(config_for("bilstm"), (5, 9), 3)
    assert all(fused for _name, fused, _why in models.fused_path_report(default))
    from pipeline.models import diagnostics

    diagnostics._warned.clear()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        first = models.build_model(config_for("bilstm", "regularization.recurrent_dropout=0.2"), (5, 9), 3)
        models.build_model(config_for("bilstm", "regularization.recurrent_dropout=0.2"), (5, 9), 3)
    assert sum("cuDNN" in str(w.message) for w in caught) == 1
    assert not any(fused for _name, fused, _why in models.fused_path_report(first))
    reasons = {
        name: why
        for name, _fused, why in models.fused_path_report(models.build_model(config_for("deep_transition"), (5, 9), 3))
    }
    assert all("custom cell" in why for why in reasons.values())
    simple = models.build_model(
        config_for("lstm", "model.name=stacked", "model.cell=rnn", "model.bidirectional=false"), (5, 9), 3
    )
    assert not any(fused for _name, fused, _why in models.fused_path_report(simple))


def test_mixed_precision_keeps_float32_outputs():
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        for name in ("bilstm", "attention", "seq2seq", "deep_transition"):
            model = models.build_model(config_for(name), (5, 9), 3)
            output = model(np.ones((2, 5, 9), np.float32))
            assert output.dtype == "float32", name
            assert np.isfinite(np.asarray(output)).all()
    finally:
        keras.mixed_precision.set_global_policy("float32")


def test_unknown_model_and_bad_shapes_are_clear_errors():
    with pytest.raises(ValueError, match="unknown model"):
        models.build_model(load_config(None, ["model.name=transformer"]), (5, 9), 3)
    with pytest.raises(ValueError, match="input_shape"):
        models.build_model(config_for("lstm"), (5,), 3)  # type: ignore[arg-type]


def reverse_task(count: int, vocabulary: int = 4, length: int = 5, seed: int = 0):
    """Series of one-hot digits; the target is the digits reversed, as tokens from FIRST_CLASS_TOKEN."""
    digits = np.random.default_rng(seed).integers(0, vocabulary, (count, length))
    series = np.eye(vocabulary, dtype=np.float32)[digits]
    targets = digits[:, ::-1] + models.FIRST_CLASS_TOKEN
    previous = np.concatenate([np.full((count, 1), models.START_TOKEN), targets], 1)
    following = np.concatenate([targets, np.full((count, 1), models.END_TOKEN)], 1)
    return series, targets, previous, following


@pytest.fixture(scope="module")
def reverse_models(tmp_path_factory: pytest.TempPathFactory):
    """A seq2seq model per decoder kind, trained on the reverse task when a test first asks for it
    (the rerun on another backend deselects the fixed-context test and so never trains that one)."""
    series, targets, previous, following = reverse_task(2600)
    trained: dict[bool, tuple] = {}

    def model_for(attention: bool) -> tuple:
        if attention in trained:
            return trained[attention]
        keras.utils.set_random_seed(0)
        config = load_config(
            None,
            [
                "model.units=32",
                "model.layers=1",
                "model.seq2seq.decoder_units=32",
                "model.seq2seq.attention_units=16",
                "model.seq2seq.embedding_dim=8",
                f"model.seq2seq.attention={str(attention).lower()}",
            ],
        )
        model = models.build_seq2seq(config, (5, 4), 4, 6)
        model.compile(optimizer=keras.optimizers.Adam(0.01), loss="sparse_categorical_crossentropy")
        model.fit([series[:2500], previous[:2500]], following[:2500], batch_size=64, epochs=15, verbose=0)
        path = tmp_path_factory.mktemp("seq2seq") / "model.keras"
        model.save(path)
        trained[attention] = (model, path)
        return trained[attention]

    return model_for, (series[2500:], targets[2500:])


def exhaustive_best(decoder, series: np.ndarray, max_length: int) -> float:
    """The highest log-probability of any output the decoders can produce, by trying every token
    sequence: a sequence ends with END, or after `max_length` tokens with whichever token comes next."""
    sequences, context, state = decoder._start(series)
    frontier = [(0.0, [], state)]  # (log-probability, tokens, decoder state) of every open prefix
    best = -np.inf
    for _depth in range(max_length + 1):
        tokens = np.array(
            [prefix[-1] if prefix else models.START_TOKEN for _score, prefix, _state in frontier], np.int32
        )
        h = np.concatenate([s[0] for _score, _prefix, s in frontier])
        c = np.concatenate([s[1] for _score, _prefix, s in frontier])
        count = len(frontier)
        probabilities, h_new, c_new, _weights = (
            np.asarray(t)
            for t in decoder.step(
                [tokens, h, c, np.repeat(sequences, count, 0), np.repeat(context, count, 0)], training=False
            )
        )
        log_p = np.log(probabilities + 1e-12)
        opened = []
        for row, (score, prefix, _state) in enumerate(frontier):
            if len(prefix) == max_length:
                best = max(best, score + float(log_p[row].max()))
                continue
            best = max(best, score + float(log_p[row, models.END_TOKEN]))
            opened += [
                (score + float(log_p[row, token]), prefix + [token], [h_new[row : row + 1], c_new[row : row + 1]])
                for token in range(decoder.vocabulary)
                if token != models.END_TOKEN
            ]
        frontier = opened
        if not frontier:
            break
    return best


def test_beam_search_finds_the_most_likely_sequence_an_exhaustive_search_finds():
    keras.utils.set_random_seed(3)
    config = load_config(
        None,
        [
            "model.units=8",
            "model.layers=1",
            "model.seq2seq.decoder_units=8",
            "model.seq2seq.attention_units=4",
            "model.seq2seq.embedding_dim=4",
        ],
    )
    decoder = models.Seq2SeqDecoder(
        models.build_seq2seq(config, (4, 3), 2, 4)
    )  # 5 tokens: PAD, START, END and two symbols
    series = np.random.default_rng(0).normal(size=(6, 4, 3)).astype(np.float32) * 3
    best = [exhaustive_best(decoder, series[i : i + 1], max_length=3) for i in range(len(series))]
    beam = decoder.beam(series, max_length=3, width=decoder.vocabulary**3)  # wide enough to keep every prefix
    np.testing.assert_allclose([result.log_probability for result in beam], best, atol=1e-4)
    greedy = decoder.greedy(series, max_length=3)
    assert any(g.log_probability < b - 1e-3 for g, b in zip(greedy, best)), (
        "pick inputs where greedy misses the optimum, or the test proves nothing"
    )


@pytest.mark.parametrize("attention", [True, False], ids=["attention", "fixed_context"])
def test_seq2seq_learns_to_reverse_with_greedy_and_beam_decoding(reverse_models, attention: bool):
    model_for, (series, targets) = reverse_models
    _model, path = model_for(attention)
    decoder = models.Seq2SeqDecoder(models.load_model(str(path)))  # decoding works from a reloaded model
    greedy = decoder.greedy(series, max_length=6)
    accuracy = np.mean([result.tokens == list(target) for result, target in zip(greedy, targets)])
    assert accuracy >= 0.95
    beam = decoder.beam(series[:20], max_length=6, width=3)
    assert np.mean([result.tokens == list(target) for result, target in zip(beam, targets[:20])]) >= 0.95
    if attention:
        alignment = greedy[0].alignment
        assert alignment.shape == (6, 5)  # 5 tokens + END, over 5 input steps
        np.testing.assert_allclose(alignment.sum(-1), 1.0, rtol=1e-5)
        # Reversal: the first output token attends most to the last input step.
        assert np.mean([r.alignment[0].argmax() == 4 for r in greedy]) > 0.8
    else:
        assert greedy[0].alignment is None


def test_decoding_stops_at_end_token_and_max_length(reverse_models):
    model_for, (series, targets) = reverse_models
    decoder = models.Seq2SeqDecoder(model_for(True)[0])
    assert all(len(result.tokens) == 2 for result in decoder.greedy(series[:5], max_length=2))
    assert all(len(result.tokens) <= 2 for result in decoder.beam(series[:3], max_length=2, width=2))
    full = decoder.greedy(series[:5], max_length=20)
    assert all(len(result.tokens) == 5 for result in full)  # stopped by END, not by the limit


def test_stacked_layers_can_each_be_bidirectional_or_not():
    model = models.build_model(
        config_for(
            "stacked", "model.layers=3", "model.bidirectional_layers=[true, false, true]", "model.residual=true"
        ),
        (5, 9),
        3,
    )
    kinds = [type(model.get_layer(f"recurrent_{index}")).__name__ for index in (1, 2, 3)]
    assert kinds == ["Bidirectional", "LSTM", "Bidirectional"]
    assert (
        model.get_layer("recurrent_2").output.shape[-1] == 8 and model.get_layer("recurrent_1").output.shape[-1] == 16
    )
    assert "recurrent_3_residual" not in [layer.name for layer in model.layers]  # last layer returns no sequence
    assert "recurrent_2_shortcut" in [layer.name for layer in model.layers]  # 16 -> 8: the shortcut is projected
    with pytest.raises(ValueError, match="3 layers"):
        models.build_model(config_for("stacked", "model.layers=3", "model.bidirectional_layers=[true]"), (5, 9), 3)


def test_pooling_reads_every_step_and_keeps_run_ids_of_the_final_state():
    from pipeline.runs.registry import run_id_for

    series = np.random.default_rng(0).normal(size=(4, 12, 9)).astype(np.float32)
    last = models.build_model(config_for("bilstm"), (12, 9), 3)
    for pooling, width in (("average", 16), ("max", 16), ("average-max", 32)):
        config = config_for("bilstm", f"model.pooling={pooling}")
        model = models.build_model(config, (12, 9), 3)
        assert model.get_layer("bidirectional_2").output.shape[1:] == (12, 16)  # the last layer returns every step
        assert model.get_layer("probabilities").input.shape[-1] == width
        assert np.allclose(model.predict(series, verbose=0).sum(-1), 1, atol=1e-5)
        assert run_id_for(config).split("_")[1] == f"bilstm-{pooling}"
    assert last.get_layer("bidirectional_2").output.shape[1:] == (16,)
    # The default leaves the hash (and so every run id made before the option) unchanged.
    assert run_id_for(config_for("bilstm", "model.pooling=last")) == run_id_for(config_for("bilstm"))
    cnn = models.build_model(config_for("cnn_lstm", "model.pooling=average"), (12, 9), 3)
    assert "average_pooling" in [layer.name for layer in cnn.layers]
    with pytest.raises(ConfigError, match="pooling"):
        config_for("bilstm", "model.pooling=mean")


def test_window_stats_branch_reads_the_noisy_window_and_the_gravity_direction(tmp_path: Path):
    from pipeline.data.signals import MEAN_FEATURES, RAW_CHANNELS
    from pipeline.runs.registry import run_id_for

    rng = np.random.default_rng(0)
    series = rng.normal(size=(3, 16, 9)).astype(np.float32)
    series[:, :, 6:9] += np.array([0.9, -0.3, 0.1], np.float32)  # a gravity direction in the total acceleration
    mean, variance = np.full(9, 0.5), np.full(9, 4.0)
    config = config_for("bilstm", "model.window_stats=true", "regularization.gaussian_noise=0.5")
    model = models.build_model(config, (16, 9), 3, mean, variance, RAW_CHANNELS)
    branch = keras.Model(model.input, model.get_layer("window_statistics").output)
    stats, window = np.asarray(branch(series, training=False)), (series - 0.5) / 2
    np.testing.assert_allclose(stats[:, :9], window.mean(1), atol=1e-5)
    np.testing.assert_allclose(stats[:, 9:18], window.std(1), atol=1e-5)
    np.testing.assert_allclose(stats[:, 18:27], window.min(1), atol=1e-5)
    np.testing.assert_allclose(stats[:, 27:36], window.max(1), atol=1e-5)
    gravity = series[:, :, 6:9].mean(1)
    np.testing.assert_allclose(stats[:, 36:], gravity / np.linalg.norm(gravity, axis=-1, keepdims=True), atol=1e-4)
    # In training the branch sees the window after the noise layer, as it sees noisy windows at test.
    assert not np.allclose(np.asarray(branch(series, training=True))[:, :9], stats[:, :9], atol=1e-3)
    assert model.get_layer("probabilities").input.shape[-1] == 16 + 39
    # The classroom's gravity means are found by name; unnamed channels get the statistics only.
    classroom = models.build_model(config, (5, 9), 3, channels=MEAN_FEATURES)
    assert classroom.get_layer("window_statistics").output.shape[-1] == 39
    assert models.build_model(config, (5, 9), 3).get_layer("window_statistics").output.shape[-1] == 36
    model.save(tmp_path / "stats.keras")
    np.testing.assert_allclose(
        np.asarray(models.load_model(str(tmp_path / "stats.keras"))(series)), np.asarray(model(series)), atol=1e-6
    )
    # Named in the run id.
    assert run_id_for(config).split("_")[1] == "bilstm-stats"
    assert run_id_for(config_for("bilstm", "model.window_stats=false")) == run_id_for(config_for("bilstm"))
    with pytest.raises(ConfigError, match="window_stats"):
        config_for("seq2seq", "model.window_stats=true")


def test_multi_scale_front_end_and_wide_path_build_learn_and_keep_the_default_ids(tmp_path: Path):
    from pipeline.runs.registry import run_id_for

    series, labels = separable((16, 9), 128, 3)
    front = config_for("bilstm", "model.front_end=[3,9]", "model.front_end_filters=4", "model.front_end_residual=true")
    model = models.build_model(front, (16, 9), 3)
    assert {"front_end_k3", "front_end_k9", "front_end_norm", "front_end_residual"} <= {
        layer.name for layer in model.layers
    }
    assert model.get_layer("front_end_residual").output.shape[1:] == (16, 8)  # 2 kernels x 4 filters, every step kept
    # Downsampling averages blocks of steps before the recurrence: 16 steps read as 4, and a window's
    # block means are what the model sees (white noise averaged down by sqrt(4)).
    shorter = models.build_model(config_for("bilstm", "model.downsample=4", "model.window_stats=true"), (16, 9), 3)
    pooled = shorter.get_layer("downsample_4")
    assert pooled.output.shape[1:] == (4, 9)
    probe = keras.Model(shorter.inputs, pooled.output)
    np.testing.assert_allclose(
        np.asarray(probe(series[:2])), series[:2].reshape(2, 4, 4, 9).mean(axis=2), rtol=1e-5, atol=1e-5
    )
    assert shorter.get_layer("window_statistics").input.shape[1] == 16  # the statistics still read the whole window
    # A series longer than model.max_steps is shortened to it unasked: 16 steps at most 5 -> blocks of 4.
    capped = models.build_model(config_for("bilstm", "model.max_steps=5"), (16, 9), 3)
    assert capped.get_layer("downsample_4").output.shape[1:] == (4, 9)
    assert not any(
        layer.name.startswith("downsample") for layer in models.build_model(config_for("bilstm"), (16, 9), 3).layers
    )
    assert models.registry.downsample_factor(config_for("bilstm", "model.max_steps=0"), 5000) == 1  # no limit
    assert models.registry.downsample_factor(config_for("bilstm", "model.max_steps=5", "model.downsample=2"), 16) == 2
    assert models.registry.downsample_factor(config_for("seq2seq", "model.max_steps=5"), 16) == 1  # decodes every step
    wide = config_for("bilstm", "model.wide=input")
    model = models.build_model(wide, (16, 9), 3)
    assert (
        model.get_layer("wide_logits").input.shape[-1] == 16 * 9
        and model.get_layer("probabilities").output.dtype == "float32"
    )
    # Wide and deep together learn a separable task (the wide logits are added to the deep path's) and reload the same.
    model.compile(optimizer=keras.optimizers.Adam(0.01), loss="categorical_crossentropy", metrics=["accuracy"])
    history = model.fit(series, keras.utils.to_categorical(labels, 3), epochs=8, batch_size=32, verbose=0)
    assert history.history["accuracy"][-1] > 0.9
    model.save(tmp_path / "wide.keras")
    np.testing.assert_allclose(
        np.asarray(models.load_model(str(tmp_path / "wide.keras"))(series[:4])),
        np.asarray(model(series[:4])),
        atol=1e-6,
    )
    stats_wide = models.build_model(config_for("bilstm", "model.wide=stats"), (16, 9), 3)
    assert stats_wide.get_layer("wide_logits").input.shape[-1] == 36  # the window statistics, no gravity channels named
    assert run_id_for(front).split("_")[1] == "bilstm-ms3x9" and run_id_for(wide).split("_")[1] == "bilstm-wideinput"
    assert run_id_for(config_for("bilstm", "model.downsample=4")).split("_")[1] == "bilstm-ds4"
    defaults = config_for(
        "bilstm",
        "model.front_end=[]",
        "model.wide=''",
        "model.front_end_filters=32",
        "model.downsample=1",
        "model.max_steps=128",
    )
    assert run_id_for(defaults) == run_id_for(config_for("bilstm"))
    with pytest.raises(ConfigError, match="model.wide"):
        config_for("bilstm", "model.wide=linear")
    with pytest.raises(ConfigError, match="downsample"):
        config_for("bilstm", "model.downsample=0")


def test_each_architecture_reads_its_own_settings_table_and_old_keys_name_the_new_one(tmp_path: Path):
    from pipeline.config import moved_keys_placed
    from pipeline.studies.tune import parse_space

    experiment = tmp_path / "cnn.toml"
    experiment.write_text('[model]\nname = "cnn_lstm"\n\n[model.cnn_lstm]\nfilters = 16\nlayers = 1\n')
    config = load_config(experiment)
    assert models.own_settings(config) == models.CnnLstmSettings(filters=16, kernel=5, layers=1)
    built = models.build_model(config, (12, 9), 3)
    assert [layer.filters for layer in built.layers if isinstance(layer, keras.layers.Conv1D)] == [16]
    assert config.to_dict()["model"]["cnn_lstm"] == {"filters": 16, "layers": 1}  # config.json keeps the table
    # the test's own architecture, added by one file and one registry line, reads its table the same way
    toy = config_for(toy_architecture.NAME, "model.toy_conv_gru.stride=4")
    assert models.build_model(toy, (12, 9), 3).get_layer("toy_conv").output.shape[1] == 3
    with pytest.raises(ConfigError, match=r"model.cnn_lstm.filterz"):
        models.own_settings(load_config(None, ["model.cnn_lstm.filterz=3"]))
    with pytest.raises(ConfigError, match=r"model.lstm: no architecture of that name has settings"):
        models.own_settings(load_config(None, ["model.lstm.units=3"]))
    with pytest.raises(ConfigError, match=r"model.conv_filters is now model.cnn_lstm.filters"):
        load_config(None, ["model.conv_filters=32"])
    # a run saved before the keys moved is read with them in their new places
    old = {"model": {"name": "seq2seq", "units": 8, "attention_units": 16, "seq2seq_attention": False}}
    placed = moved_keys_placed(old)["model"]
    assert placed == {
        "name": "seq2seq",
        "units": 8,
        "attention": {"units": 16},
        "seq2seq": {"attention": False, "attention_units": 16},
    }
    (parameter,) = parse_space(("model.cnn_lstm.filters=16..64",))
    assert parameter.kind == "int"
