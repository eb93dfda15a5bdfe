"""Networks from Python: building, training with the library's Trainer, modes, saving and
loading the CLI's files, Ctrl-C."""

import json
import subprocess
import threading
import _thread
from pathlib import Path

import numpy as np
import pytest

import adjoint

from conftest import cli


@pytest.fixture(scope="module")
def small_mnist():
    return adjoint.mnist(limit=3000, test_limit=1000)


def test_mnist_arrays_are_what_the_cli_trains_on(small_mnist):
    x, y, xt, yt = small_mnist
    assert x.shape == (3000, 784) and x.dtype == np.float32
    assert y.dtype == np.int64 and set(np.unique(y)) == set(range(10))
    assert 0.0 <= x.min() and x.max() <= 1.0
    assert xt.shape == (1000, 784) and yt.shape == (1000,)


def test_the_lecture_network_learns_mnist_and_reports_history(small_mnist):
    net = adjoint.Network([784, 100, 10], activation="tanh", seed=1)
    assert net.arch.startswith("fc:100") or "100" in net.arch
    history = net.fit("mnist", epochs=2, limit=3000, progress=False)
    assert [h["epoch"] for h in history] == [1, 2]
    assert history[-1]["test_accuracy"] > 0.8
    more = net.fit("mnist", epochs=1, limit=3000, progress=False)
    assert len(more) == 3 and net.history == more
    _, _, xt, yt = small_mnist
    assert (net.classify(xt) == yt).mean() > 0.8


def test_training_on_arrays_classification_and_regression():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(600, 2)).astype(np.float32)
    y = (x[:, 0] * x[:, 1] > 0).astype(np.int64)  # XOR of the signs
    net = adjoint.Network([2, 16, 2], activation="tanh", seed=3)
    h = net.fit(x, y, test=(x, y), epochs=30, batch=32, optimizer="adam", lr=0.02, schedule="constant", progress=False)
    assert h[-1]["test_accuracy"] > 0.9
    targets = (x[:, :1] * 2 - x[:, 1:]).astype(np.float32)
    reg = adjoint.Network("fc:1", input_shape=[2], seed=1)
    h = reg.fit(x, targets, epochs=20, optimizer="adam", lr=0.05, schedule="constant", progress=False)
    assert h[-1]["test_loss"] < 1e-3
    w = reg.parameters()["0.weight"].detach().numpy()
    np.testing.assert_allclose(w.ravel(), [2, -1], atol=0.05)


def test_bad_training_input_is_a_value_error():
    net = adjoint.Network([4, 3], seed=1)
    x = np.zeros((10, 4), dtype=np.float32)
    with pytest.raises(ValueError, match="label 5"):
        net.fit(x, np.full(10, 5), progress=False)
    with pytest.raises(ValueError, match="rows"):
        net.fit(x, np.zeros(9, dtype=np.int64), progress=False)
    with pytest.raises(ValueError, match="optimizer"):
        net.fit(x, np.zeros(10, dtype=np.int64), optimizer="lbfgs", progress=False)
    with pytest.raises(ValueError, match="features"):
        net.predict(np.zeros((2, 5)))
    with pytest.raises(ValueError):
        adjoint.Network("fc:10,bogus:3")
    with pytest.raises(ValueError):
        adjoint.Network([784, 0, 10])


def test_save_and_load_give_the_same_outputs_and_never_overwrite(tmp_path):
    net = adjoint.Network("fc:32,relu,fc:10", input_shape=[784], seed=7)
    x = np.random.default_rng(0).random((5, 784), dtype=np.float32)
    path = net.save(tmp_path / "m.safetensors")
    loaded = adjoint.Network.load(path)
    np.testing.assert_array_equal(net.predict(x), loaded.predict(x))
    with pytest.raises(FileExistsError):
        net.save(path)
    net.save(path, force=True)
    with pytest.raises(FileNotFoundError):
        adjoint.Network.load(tmp_path / "missing.safetensors")
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"\xff" * 100)
    with pytest.raises(ValueError):
        adjoint.Network.load(garbage)


def test_a_cli_run_folder_loads_and_predicts_the_classes_adjoint_eval_counts(tmp_path):
    binary = cli()
    run = tmp_path / "run"
    out = subprocess.run(
        [binary, "train", "--epochs", "1", "--limit", "2000", "--test-limit", "1000", "--out", str(run), "--quiet"],
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stderr
    evaluated = subprocess.run([binary, "eval", "--model", str(run), "--json"], capture_output=True, text=True)
    assert evaluated.returncode == 0, evaluated.stderr
    report = json.loads(evaluated.stdout)
    net = adjoint.Network.load(run)
    _, _, xt, yt = adjoint.mnist(limit=0, test_limit=1000)
    predicted = net.classify(xt)
    confusion = np.zeros((10, 10), dtype=int)
    for truth, guess in zip(yt, predicted):
        confusion[truth, guess] += 1
    assert confusion.tolist() == report["confusion"]
    assert (predicted == yt).mean() == pytest.approx(report["accuracy"], abs=1e-9)


def test_predict_runs_in_evaluation_mode_and_modes_switch():
    net = adjoint.Network("fc:64,relu,dropout:0.5,fc:10", input_shape=[784], seed=2)
    x = np.random.default_rng(1).random((8, 784), dtype=np.float32)
    net.train()
    first, second = net.predict(x), net.predict(x)
    np.testing.assert_array_equal(first, second)  # dropout off in predict
    net.eval()
    np.testing.assert_array_equal(net(x).detach().numpy(), first)
    net.train()
    assert not np.array_equal(net(x).detach().numpy(), first)  # dropout on in training mode


def test_a_loss_of_your_own_fills_the_parameters_gradients():
    net = adjoint.Network([4, 3], seed=1)
    x = np.ones((2, 4), dtype=np.float32)
    loss = adjoint.cross_entropy(net(x), [0, 2])
    loss.backward()
    params = net.parameters()
    assert set(params) == {"0.weight", "0.bias"}
    assert params["0.weight"].grad is not None and params["0.weight"].grad.shape == params["0.weight"].shape
    net.zero_grad()
    assert params["0.weight"].grad is None


def test_ctrl_c_stops_training_keeps_progress_and_fit_continues():
    net = adjoint.Network([784, 100, 10], seed=1)
    timer = threading.Timer(0.5, _thread.interrupt_main)
    timer.start()
    with pytest.raises(KeyboardInterrupt, match="interrupted at"):
        net.fit("mnist", epochs=50, limit=20000, progress=False)
    timer.cancel()
    done = len(net.history)
    assert done < 50
    history = net.fit("mnist", epochs=1, limit=2000, progress=False)
    assert len(history) == done + 1


def test_progress_is_printed(capsys):
    net = adjoint.Network([784, 10], seed=1)
    net.fit("mnist", epochs=1, limit=500, progress=True)
    out = capsys.readouterr().out
    assert "epoch 1/1" in out and "test accuracy" in out


def test_one_network_serves_several_threads():
    net = adjoint.Network([784, 32, 10], seed=1)
    x = np.random.default_rng(0).random((50, 784), dtype=np.float32)
    expected = net.predict(x)
    errors, results = [], []

    def work():
        try:
            for _ in range(5):
                results.append(net.predict(x))
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=work) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    assert all(np.array_equal(r, expected) for r in results)


def test_predict_works_in_slices_and_keeps_the_mode():
    net = adjoint.Network([784, 10], seed=1)
    x = np.random.default_rng(0).random((2500, 784), dtype=np.float32)
    whole = net.predict(x)
    assert whole.shape == (2500, 10)
    np.testing.assert_array_equal(whole[2000:], net.predict(x[2000:]))
    assert net.training
    net.eval()
    net.predict(x[:3])
    assert not net.training
    with pytest.raises(ValueError, match="rows of 784 features"):
        net.predict(np.ones(4))


def test_a_training_loop_of_your_own_with_the_optimizer():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 2)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int64)
    net = adjoint.Network([2, 8, 2], seed=1)
    opt = adjoint.Optimizer(net, "adam", lr=0.05)
    first = None
    for step in range(60):
        loss = adjoint.cross_entropy(net(x), y)
        first = first if first is not None else loss.item()
        loss.backward()
        opt.step()
        opt.zero_grad()
    assert loss.item() < first / 4
    assert (net.classify(x) == y).mean() > 0.95
    opt.lr = 0.01
    assert opt.lr == 0.01
    with pytest.raises(ValueError):
        adjoint.Optimizer(net, "lbfgs")


def test_float_labels_for_a_classifier_are_named():
    net = adjoint.Network([4, 3], seed=1)
    with pytest.raises(ValueError, match="class labels must be integers"):
        net.fit(np.zeros((10, 4), dtype=np.float32), np.zeros(10), progress=False)
    with pytest.raises(ValueError, match="input_shape"):
        adjoint.Network([784, 10], input_shape=[5])


def test_networks_from_layer_objects_are_the_arch_strings_networks():
    from adjoint import layers as L

    mlp = adjoint.Network([L.Linear(784, 100), L.Tanh(), L.Linear(100, 10)], seed=3)
    same = adjoint.Network("fc:100,tanh,fc:10", input_shape=[784], seed=3)
    assert mlp.arch == same.arch
    x = np.random.default_rng(0).random((4, 784), dtype=np.float32)
    np.testing.assert_array_equal(mlp.predict(x), same.predict(x))
    lenet = adjoint.Network(
        [L.Conv2d(1, 20, 5), L.ReLU(), L.MaxPool2d(2), L.Conv2d(20, 50, 5), L.ReLU(), L.MaxPool2d(2),
         L.Flatten(), L.Linear(800, 500), L.ReLU(), L.Dropout(0.5), L.Linear(500, 10)],
        input_shape=(1, 28, 28),
    )
    assert lenet.parameter_count == adjoint.Network("lenet").parameter_count
    with pytest.raises(ValueError, match="input width of 700"):
        adjoint.Network([L.Linear(784, 100), L.ReLU(), L.Linear(700, 10)])
    with pytest.raises(ValueError, match="input_shape"):
        adjoint.Network([L.Conv2d(1, 4, 3), L.Flatten(), L.Linear(2704, 10)])
