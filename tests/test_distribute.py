"""train.distribute: mirrored training over two logical CPU devices, in a process of its own
(the CPU can only be split before TensorFlow starts), and a two-worker cluster of fresh
processes on 127.0.0.1."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import sys
from pathlib import Path

import forked
import pytest
from conftest import tiny_overrides, write_folder_dataset

from imgclf.infra.errors import ConfigError
from imgclf.training.cluster import is_chief
from imgclf.training.distribute import make_strategy

SCRIPT = r"""
import contextlib, json, sys
import numpy as np
import tensorflow as tf

cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
import keras
from imgclf.config import load_config
from imgclf.training.distribute import make_strategy
from imgclf.infra.errors import ConfigError
from imgclf.models import build_model
from imgclf.training.optim import compile_model
from imgclf.train import train

out_dir, overrides = sys.argv[1], sys.argv[2:]
result = {}

# The same model, weights and batches: steps on 2 replicas equal steps on 1 device.
cfg = load_config(None, ["model.name=mlp", "data.image_size=[8,8]", "model.hidden=[16]",
                         "model.batch_norm=false", "model.dropout=0", "model.l2=0",
                         "train.optimizer=sgd", "train.schedule=constant",
                         "train.learning_rate=0.1"])
rng = np.random.default_rng(0)
x = rng.uniform(0, 255, (24, 8, 8, 1)).astype("float32")
y = np.eye(3, dtype="float32")[np.arange(24) % 3]
weights = []
for mode in ("none", "mirrored"):
    strategy = make_strategy(mode)
    keras.utils.set_random_seed(0)
    with strategy.scope() if strategy else contextlib.nullcontext():
        model = build_model(cfg, 3)
        compile_model(model, cfg.train, steps_per_epoch=2)
    ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(12)
    model.fit(ds, epochs=2, verbose=0, shuffle=False)
    weights.append(model.get_weights())
result["replicas"] = strategy.num_replicas_in_sync
# The cluster's exchanges with several replicas in one worker (a worker with 2 GPUs): each
# value is sent once per worker, not once per replica.
from imgclf.training.cluster_sync import all_sum, broadcast_arrays, broadcast_json
values = [np.array([1.5, -2.25]), np.array([[3, 4]], np.int32)]
result["all_sum"] = [v.tolist() for v in all_sum(strategy, values)]
result["broadcast"] = [v.tolist() for v in broadcast_arrays(strategy, values)]
result["json"] = broadcast_json(strategy, {"start": 3, "early": [{"best": 0.5}]})
result["max_weight_diff"] = max(float(np.abs(a - b).max()) for a, b in zip(*weights))

# Then a whole mirrored run through train(), in the same process (make_strategy gives it the
# strategy made above); then a batch that does not split evenly is refused.
config = load_config(None, [*overrides, "train.distribute=mirrored"])
run = train(config, out=out_dir, verbose=0)
result["same_strategy"] = make_strategy("mirrored") is strategy
result["metrics"] = json.load(open(f"{out_dir}/metrics.json"))["test"]
odd = load_config(None, [*overrides, "train.distribute=mirrored", "train.batch_size=7"])
try:
    train(odd, out=out_dir + "-odd", verbose=0)
except ConfigError as exc:
    result["odd_batch_error"] = str(exc)
# The photo recipe (two-phase transfer from ImageNet weights) mirrored and on one device.
import os
from imgclf.models.saving import load_run_model
transfer = json.loads(os.environ["TRANSFER_OVERRIDES"])
made = {}
for mode in ("none", "mirrored"):
    run = train(load_config(None, [*transfer, f"train.distribute={mode}"]),
                out=f"{out_dir}-transfer-{mode}", verbose=0)
    made[mode] = (json.load(open(run / "metrics.json")), load_run_model(run).get_weights())
result["transfer_phases"] = [p["phase"] for p in made["mirrored"][0]["phases"]]
result["transfer_head_loss"] = [made[m][0]["phases"][0]["best_val_loss"] for m in made]
result["transfer_weight_diff"] = max(
    float(np.abs(a - b).max()) for a, b in zip(made["none"][1], made["mirrored"][1])
)
print("RESULT " + json.dumps(result))
"""


@pytest.mark.slow
def test_mirrored_training_on_two_logical_cpus(tmp_path: Path):
    data = write_folder_dataset(tmp_path / "data", per_class=20, seed=1)
    overrides = [
        *tiny_overrides(data), "model.name=mlp", "train.epochs=6", "model.dropout=0",
        "train.export=true",
        "data.val_fraction=0.2", "data.test_fraction=0.2", "train.batch_size=12",
    ]  # fmt: skip
    transfer = _transfer_overrides(data)
    # A process of its own (forked before TensorFlow has started, so the CPU can be split).
    env = {**os.environ, "TRANSFER_OVERRIDES": json.dumps(transfer)}
    result = forked.run(SCRIPT, tmp_path / "run", *overrides, timeout=400, env=env)
    lines = [line for line in result.stdout.splitlines() if line.startswith("RESULT ")]
    assert result.returncode == 0 and lines, result.stderr[-3000:]
    out = json.loads(lines[-1][len("RESULT ") :])
    assert out["replicas"] == 2 and out["same_strategy"]  # one strategy per process
    for exchanged in (out["all_sum"], out["broadcast"]):  # one worker: its own values, once
        assert exchanged == [[1.5, -2.25], [[3, 4]]]
    assert out["json"] == {"start": 3, "early": [{"best": 0.5}]}
    # Data-parallel SGD over 2 replicas is the same computation as on one device.
    assert out["max_weight_diff"] < 1e-5
    assert out["metrics"]["accuracy"] >= 0.8  # the mirrored run learned the task (chance: 1/3)
    for name in ("model.keras", "saved_model/saved_model.pb", "metrics.json", "history.csv"):
        assert (tmp_path / "run" / name).exists(), name
    assert "multiple of the 2 replicas" in out["odd_batch_error"]
    # The two-phase transfer mirrored: within docs/distributed.md's tolerance of one device.
    assert out["transfer_phases"] == ["head", "fine_tune"]
    none, mirrored = out["transfer_head_loss"]
    assert abs(mirrored - none) <= 0.01 * none
    assert out["transfer_weight_diff"] < 0.05


def _transfer_overrides(data: Path) -> list[str]:
    """The photo recipe, tiny: EfficientNet-Lite0's ImageNet weights at 32 px, 3 head epochs
    (on cached features), 2 fine-tune epochs with the top 10 layers unfrozen."""
    return [
        *tiny_overrides(data), "model.name=efficientnet_lite0", "model.weights=imagenet",
        "model.hidden=[]", "model.dropout=0", "transfer.head_epochs=3",
        "transfer.fine_tune_epochs=2", "transfer.unfreeze=10", "train.batch_size=12",
        "train.early_stopping.patience=0",
    ]  # fmt: skip


MULTIWORKER_SCRIPT = r"""
import contextlib, faulthandler, json, os, sys
# A worker still running after 200 s prints every thread's Python stack to stderr and exits,
# so a hang shows where it is in the test's failure message (which reads stderr's tail).
faulthandler.dump_traceback_later(200, exit=True)
import numpy as np
import tensorflow as tf
import keras
from imgclf.config import load_config
from imgclf.training.distribute import fit_multiworker, make_strategy
from imgclf.models import build_model
from imgclf.training.optim import compile_model
from imgclf.train import train

out_dir, overrides = sys.argv[1], sys.argv[2:]
strategy = make_strategy("multiworker")  # first, before other TensorFlow work
result = {"replicas": strategy.num_replicas_in_sync}
# imgclf's multi-worker loop on fixed batches vs Keras fit() on one device.
cfg = load_config(None, ["model.name=mlp", "data.image_size=[8,8]", "model.hidden=[16]",
                         "model.batch_norm=false", "model.dropout=0",
                         "train.optimizer=sgd", "train.schedule=constant",
                         "train.learning_rate=0.1"])
rng = np.random.default_rng(0)
x = rng.uniform(0, 255, (24, 8, 8, 1)).astype("float32")
y = np.eye(3, dtype="float32")[np.arange(24) % 3]
ds = lambda: tf.data.Dataset.from_tensor_slices((x, y)).batch(12)
keras.utils.set_random_seed(0)
with strategy.scope():
    model = build_model(cfg, 3)
    compile_model(model, cfg.train, steps_per_epoch=2)
fit_multiworker(model, strategy, ds(), ds(), 2, [])
keras.utils.set_random_seed(0)
reference = build_model(cfg, 3)
compile_model(reference, cfg.train, steps_per_epoch=2)
reference.fit(ds(), epochs=2, verbose=0, shuffle=False)
result["max_weight_diff"] = max(
    float(np.abs(a - b).max()) for a, b in zip(model.get_weights(), reference.get_weights())
)
# A batch-norm model: each worker's moving statistics see only its share of every batch; the
# loop averages them every epoch and hands every worker the chief's logs.
import hashlib
bn_cfg = load_config(None, ["model.name=cnn", "data.image_size=[16,16]", "model.filters=[4]",
                            "model.hidden=[8]", "model.batch_norm=true", "model.dropout=0"])
x16 = rng.uniform(0, 255, (48, 16, 16, 1)).astype("float32")
y16 = np.eye(3, dtype="float32")[np.arange(48) % 3]
ds16 = lambda: tf.data.Dataset.from_tensor_slices((x16, y16)).batch(12)
with strategy.scope():
    bn = build_model(bn_cfg, 3)
    compile_model(bn, bn_cfg.train, steps_per_epoch=4)
seen = []
class Keep(keras.callbacks.Callback):
    def on_epoch_end(self, epoch, logs=None):
        seen.append(dict(logs))
fit_multiworker(bn, strategy, ds16(), ds16(), 2, [Keep()])
result["bn_digest"] = hashlib.sha256(
    b"".join(np.asarray(v).tobytes() for v in bn.weights)
).hexdigest()
result["bn_logs"] = seen
# Then a whole run through train(), in the same processes: make_strategy gives train() the
# strategy made above (TensorFlow configures a process's collectives once).
run = train(load_config(None, [*overrides, "train.distribute=multiworker"]), out=out_dir, verbose=0)
result["run_exists"] = run.exists()
result["same_strategy"] = make_strategy("multiworker") is strategy
# The photo recipe: the two-phase transfer from ImageNet weights, its head phase on cached
# features, then fine-tuning, on both workers.
transfer = json.loads(os.environ["TRANSFER_OVERRIDES"])
run = train(load_config(None, [*transfer, "train.distribute=multiworker"]),
            out=out_dir + "-transfer", verbose=0)
result["transfer_exists"] = run.exists()
print("RESULT " + json.dumps(result))
"""


def _free_ports(n: int) -> list[int]:
    """n distinct free ports: every socket stays bound until all are chosen (one closed
    before the next bind may be handed out again, and two workers on one port never meet)."""
    with contextlib.ExitStack() as stack:
        socks = [stack.enter_context(socket.socket()) for _ in range(n)]
        for sock in socks:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in socks]


HANG = "Timeout (0:03:20)!"  # faulthandler's line when the script's 200 s limit fires


def _launch(out: Path, overrides: list[str], transfer: list[str]) -> list[dict]:
    """Run MULTIWORKER_SCRIPT once as a 2-worker cluster on 127.0.0.1; each worker's result.
    Each worker is a process of its own, forked from the forkserver that has imported
    TensorFlow but never started it (TF_CONFIG is read when the strategy is made)."""
    cluster = {"worker": [f"127.0.0.1:{port}" for port in _free_ports(2)]}
    workers = []
    for index in range(2):
        tf_config = {"cluster": cluster, "task": {"type": "worker", "index": index}}
        env = {**os.environ, "TF_CONFIG": json.dumps(tf_config)}
        env["TRANSFER_OVERRIDES"] = json.dumps(transfer)
        workers.append(forked.start(MULTIWORKER_SCRIPT, out, *overrides, env=env))
    outputs = []
    try:
        for process, log in workers:
            process.join(240)
            text = log.read_text(errors="replace")
            outputs.append(text if process.exitcode is not None else text + HANG)
    finally:
        for process, log in workers:
            process.kill()
            process.join()
            log.unlink(missing_ok=True)
    codes = [process.exitcode for process, _ in workers]
    tails = "\n".join(
        f"worker {i} (exit {code}):\n{text[-3000:]}"
        for i, (code, text) in enumerate(zip(codes, outputs, strict=True))
    )
    if any(HANG in text for text in outputs):  # no relaunch: a hang is a failure, with stacks
        pytest.fail(f"the 2-worker cluster {cluster} hung:\n{tails}")
    results = []
    for code, text in zip(codes, outputs, strict=True):
        lines = [line for line in text.splitlines() if line.startswith("RESULT ")]
        assert code == 0 and lines, tails
        results.append(json.loads(lines[-1][len("RESULT ") :]))
    return results


@pytest.mark.slow
def test_multiworker_training_with_two_local_workers(tmp_path: Path):
    data = write_folder_dataset(tmp_path / "data", per_class=20, seed=1)
    # Decoded into memory: every worker holds every image and the strategy splits each global
    # batch. Streamed files (each worker reading its own shard) are the resume test's data.
    overrides = [
        *tiny_overrides(data), "model.name=mlp", "train.epochs=2", "data.cache=memory",
        "train.export=true",
        "data.val_fraction=0.2", "data.test_fraction=0.2", "train.batch_size=12",
    ]  # fmt: skip
    transfer = _transfer_overrides(data)
    chief, worker = _launch(tmp_path / "run", overrides, transfer)  # a hang fails it
    for result in (chief, worker):
        assert result["replicas"] == 2
        # Two workers, each with half of every global batch, compute the single-device update.
        assert result["max_weight_diff"] < 1e-5
        assert result["same_strategy"]  # one strategy per process, train() included
    # Batch norm: the same moving statistics on both workers, so the same model, the same
    # validation figures and the same decisions (they drifted apart before: docs/distributed.md).
    assert chief["bn_digest"] == worker["bn_digest"]
    assert chief["bn_logs"] == worker["bn_logs"] and len(chief["bn_logs"]) == 2
    assert chief["run_exists"] and not worker["run_exists"]  # only worker 0 keeps its run
    for name in ("model.keras", "saved_model/saved_model.pb", "metrics.json", "history.csv"):
        assert (tmp_path / "run" / name).exists(), name
    with (tmp_path / "run" / "history.csv").open() as fh:
        assert len(fh.read().strip().splitlines()) == 1 + 2  # header + one row per epoch
    _same_as_one_device(tmp_path, transfer, chief, worker)


def _same_as_one_device(tmp_path: Path, transfer: list[str], chief: dict, worker: dict) -> None:
    """The two-phase transfer on 2 workers against the same recipe on one device, within the
    tolerance docs/distributed.md gives (the same global batches; summation order differs)."""
    from imgclf.config import load_config
    from imgclf.models.saving import load_run_model
    from imgclf.train import train

    assert chief["transfer_exists"] and not worker["transfer_exists"]
    two = tmp_path / "run-transfer"
    one = train(load_config(None, transfer), out=tmp_path / "one", verbose=0)
    m2, m1 = (json.loads((run / "metrics.json").read_text()) for run in (two, one))
    assert [p["phase"] for p in m2["phases"]] == ["head", "fine_tune"]
    assert m2["phases"][0]["cached_features"] is True  # features computed once
    head2, head1 = (m["phases"][0]["best_val_loss"] for m in (m2, m1))
    assert abs(head2 - head1) <= 0.01 * head1  # the head phase: within 1%
    assert abs(m2["test"]["accuracy"] - m1["test"]["accuracy"]) <= 0.1
    weights = [load_run_model(run).get_weights() for run in (two, one)]
    diff = max(float(abs(a - b).max()) for a, b in zip(*weights, strict=True))
    assert diff < 0.05, diff


def test_multiworker_needs_tf_config(monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    with pytest.raises(ConfigError, match="needs the TF_CONFIG environment variable"):
        make_strategy("multiworker")


def test_chief_is_worker_zero(monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    assert is_chief()
    cluster = {"worker": ["127.0.0.1:1", "127.0.0.1:2"]}
    for index, chief in ((0, True), (1, False)):
        config = {"cluster": cluster, "task": {"type": "worker", "index": index}}
        monkeypatch.setenv("TF_CONFIG", json.dumps(config))
        assert is_chief() is chief


RAY_SCRIPT = r"""
import sys
from imgclf.train import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.slow
def test_the_ray_launcher_trains_on_a_local_two_worker_cluster(tmp_path: Path):
    """`imgclf-train --ray 2`: Ray Train's TensorflowTrainer starts 2 workers on a local Ray
    cluster, each with the TF_CONFIG Ray gives it; the chief writes a whole run."""
    import subprocess
    import tempfile

    pytest.importorskip("ray.train.tensorflow", reason="the [ray] extra")  # in the dev extras
    data = write_folder_dataset(tmp_path / "data", per_class=20, seed=1)
    overrides = [
        *tiny_overrides(data), "model.name=mlp", "train.epochs=2", "data.cache=memory",
        "data.val_fraction=0.2", "data.test_fraction=0.2", "train.batch_size=12",
    ]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if k not in ("TF_CONFIG", "RAY_ADDRESS")}
    # Ray's sockets and logs: a short folder of its own (a socket path has at most 107 bytes).
    env["RAY_TMPDIR"] = tempfile.mkdtemp(prefix="ray", dir="/tmp")
    done = subprocess.run(
        [sys.executable, "-c", RAY_SCRIPT, "--ray", "2", "-q", *overrides],
        env=env, capture_output=True, text=True, timeout=500, cwd=tmp_path,
    )  # fmt: skip
    shutil.rmtree(env["RAY_TMPDIR"], ignore_errors=True)
    assert done.returncode == 0, done.stderr[-3000:]
    run = Path(done.stdout.strip().splitlines()[-1])
    assert run.parent == (tmp_path / "runs").resolve()  # runs/<name>-<time>, as without Ray
    assert (tmp_path / "runs" / "latest").resolve() == run  # `latest` points at it
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["test"]["accuracy"] > 0.5
    config = (run / "config.yaml").read_text()
    assert "distribute: multiworker" in config  # Ray's workers trained it multi-worker
    assert json.loads((run / "state.json").read_text())["state"] == "complete"


def _chief_of(script: str, tmp_path: Path) -> tuple[int | None, str]:
    """Run `script` as a 2-worker cluster on 127.0.0.1 (a tiny MLP run into tmp_path/run);
    (the chief's exit code, its output) once it has ended (200 s at most); the other worker
    is killed then."""
    data = write_folder_dataset(tmp_path / "data", per_class=20, seed=1)
    overrides = [
        *tiny_overrides(data), "model.name=mlp", "train.epochs=2", "data.cache=memory",
        "data.val_fraction=0.2", "data.test_fraction=0.2", "train.batch_size=12",
    ]  # fmt: skip
    cluster = {"worker": [f"127.0.0.1:{port}" for port in _free_ports(2)]}
    workers = []
    for index in range(2):
        tf_config = {"cluster": cluster, "task": {"type": "worker", "index": index}}
        env = {**os.environ, "TF_CONFIG": json.dumps(tf_config)}
        workers.append(forked.start(script, tmp_path / "run", *overrides, env=env))
    try:
        chief, log = workers[0]
        chief.join(200)
        return chief.exitcode, log.read_text(errors="replace")
    finally:
        for process, worker_log in workers:
            process.kill()
            process.join()
            worker_log.unlink(missing_ok=True)


TIMEOUT_SCRIPT = r"""
import json, os, sys, time
from imgclf.training import cluster, distribute
distribute.make_strategy("multiworker")
from imgclf.config import load_config
from imgclf.train import train
out_dir, overrides = sys.argv[1], sys.argv[2:]
if not cluster.is_chief():  # this worker stalls before its first step: the chief waits
    loop = distribute._loop
    def stalled(*args, **kwargs):
        time.sleep(40)
        return loop(*args, **kwargs)
    distribute._loop = stalled
config = load_config(None, [*overrides, "train.distribute=multiworker",
                            "train.collective_timeout=10"])
train(config, out=out_dir, verbose=0)
print("FINISHED", flush=True)  # never: the chief's watchdog ends it, the other outlives it
os._exit(0)
"""


@pytest.mark.slow
def test_a_training_step_that_never_completes_fails_the_run_with_the_stacks(tmp_path: Path):
    """A worker that stalls: after train.collective_timeout (here 10 s) without a completed
    step the chief's watchdog ends it instead of a hang: exit 2, one line, the run `failed`,
    every thread's stack in the run's stacks.txt."""
    code, text = _chief_of(TIMEOUT_SCRIPT, tmp_path)
    assert code == 2 and "FINISHED" not in text, text[-3000:]
    stacks = tmp_path / "run" / "stacks.txt"
    errors = [line for line in text.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "no training step completed in 10 s" in errors[0]
    assert str(stacks) in errors[0] and "Thread" in stacks.read_text()
    state = json.loads((tmp_path / "run" / "state.json").read_text())
    assert state["state"] == "failed" and "CollectiveTimeout" in state["reason"]


def test_the_kubernetes_manifest_is_valid_and_its_workers_agree_on_the_cluster():
    """deploy/kubernetes/imgclf-multiworker.yaml: both objects valid against Kubernetes 1.30's
    schema (kubernetes-validate, strict: an unknown field fails), and the TF_CONFIG each pod's
    shell builds is JSON naming every worker and that pod's index."""
    import subprocess

    import kubernetes_validate
    import yaml

    path = Path(__file__).resolve().parents[1] / "deploy" / "kubernetes" / "imgclf-multiworker.yaml"
    documents = list(yaml.safe_load_all(path.read_text()))
    assert [d["kind"] for d in documents] == ["Service", "Job"]
    for document in documents:
        kubernetes_validate.validate(document, "1.30", strict=True)
    broken = {**documents[1], "spec": {**documents[1]["spec"], "completion": 2}}  # a typo
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, "1.30", strict=True)
    container = documents[1]["spec"]["template"]["spec"]["containers"][0]
    script = container["args"][0].split("exec imgclf-train")[0] + 'printf %s "$TF_CONFIG"\n'
    workers = int(container["env"][0]["value"])
    for index in range(workers):
        env = {"PATH": os.environ["PATH"], "WORKERS": str(workers)}
        env["JOB_COMPLETION_INDEX"] = str(index)
        made = subprocess.run(["/bin/sh", "-c", script], env=env, capture_output=True, text=True)
        config = json.loads(made.stdout)
        assert config["task"] == {"type": "worker", "index": index}
        assert config["cluster"]["worker"] == [
            f"imgclf-train-{i}.imgclf-workers:12345" for i in range(workers)
        ]


def _cli_cluster(argv: list[str], faults: tuple[str, str] = ("", "")) -> list[tuple[int, str]]:
    """`imgclf-train *argv` on a 2-worker cluster on 127.0.0.1 (worker i with IMGCLF_FAULT
    faults[i]); each worker's (exit code, output) once both have ended (300 s at most)."""
    cluster = {"worker": [f"127.0.0.1:{port}" for port in _free_ports(2)]}
    workers = []
    for index in range(2):
        env = {k: v for k, v in os.environ.items() if k != "IMGCLF_FAULT"}
        env["TF_CONFIG"] = json.dumps(
            {"cluster": cluster, "task": {"type": "worker", "index": index}}
        )
        if faults[index]:
            env["IMGCLF_FAULT"] = faults[index]
        workers.append(forked.start("imgclf-train", *argv, env=env))
    try:
        for process, _ in workers:
            process.join(300)
        return [(process.exitcode, log.read_text(errors="replace")) for process, log in workers]
    finally:
        for process, log in workers:
            process.kill()
            process.join()
            log.unlink(missing_ok=True)


@pytest.mark.slow
def test_a_worker_killed_mid_epoch_leaves_a_run_that_resume_completes(tmp_path: Path):
    """Worker 1 is SIGKILLed in the middle of epoch 2 (after its 5th step, 3 steps an epoch;
    streamed files, each worker decoding only its shard of the training images):
    the chief ends in one line naming the lost task and the resume command, the run is
    `interrupted`; `imgclf-train --resume RUN` on both workers continues from the chief's
    backup of epoch 1 and ends with the same model as a run that was never interrupted."""
    import numpy as np

    from imgclf.models.saving import load_run_model

    data = write_folder_dataset(tmp_path / "data", per_class=20, seed=1)
    overrides = [
        *tiny_overrides(data), "model.name=cnn", "train.epochs=4", "data.cache=none",
        "data.val_fraction=0.2", "data.test_fraction=0.2", "train.batch_size=12",
        "train.distribute=multiworker", "-q",
    ]  # fmt: skip
    run, reference = tmp_path / "run", tmp_path / "reference"
    (chief, chief_text), (worker, _) = _cli_cluster(["--out", str(run), *overrides], ("", "step:5"))
    assert chief == 2 and worker == -9, chief_text[-3000:]
    errors = [line for line in chief_text.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "/job:worker/replica:0/task:1" in errors[0], chief_text[-3000:]
    assert f"imgclf-train --resume {run}" in errors[0] and "Traceback" not in chief_text
    state = json.loads((run / "state.json").read_text())
    assert state["state"] == "interrupted" and "WorkerLost" in state["reason"]
    assert len((run / "history.csv").read_text().strip().splitlines()) == 1 + 1  # epoch 1
    resumed = _cli_cluster(["--resume", str(run)])
    assert [code for code, _ in resumed] == [0, 0], resumed[0][1][-3000:] + resumed[1][1][-3000:]
    assert json.loads((run / "state.json").read_text())["state"] == "complete"
    assert not (run / ".resume").exists()
    done = _cli_cluster(["--out", str(reference), *overrides])
    assert [code for code, _ in done] == [0, 0], done[0][1][-3000:]
    # The interrupted-and-resumed run is the uninterrupted one: the same epochs, the same model.
    rows = [(r / "history.csv").read_text().splitlines() for r in (run, reference)]
    assert [line.split(",")[:6] for line in rows[0]] == [line.split(",")[:6] for line in rows[1]]
    assert len(rows[0]) == 1 + 4
    weights = [load_run_model(r).get_weights() for r in (run, reference)]
    assert max(float(np.abs(a - b).max()) for a, b in zip(*weights, strict=True)) < 1e-6


def test_a_multiworker_run_resumes_only_on_as_many_workers(tmp_path: Path):
    """The chief records the cluster's shape (workers, replicas); resuming on another is one
    line saying why, before any training."""
    import numpy as np

    from imgclf.config import load_config
    from imgclf.data.split import splits_from_arrays
    from imgclf.training.resume import Resume

    x, y = np.zeros((6, 8, 8, 1), np.uint8), np.arange(6) % 3
    config = load_config(None, ["data.image_size=[8,8]", "data.channels=1"])
    parts = {"train": (x, y), "val": (x, y), "test": (x, y)}
    splits = splits_from_arrays(config, parts, ["a", "b", "c"], "arrays")
    Resume(tmp_path).check_data(splits, resuming=False, shape=[2, 2])
    Resume(tmp_path).check_data(splits, resuming=True, shape=[2, 2])  # the same cluster: fine
    for other in ([3, 3], [2, 4]):  # more workers; as many workers with more GPUs each
        with pytest.raises(ConfigError, match=r"started on 2 worker\(s\) with 2 replica"):
            Resume(tmp_path).check_data(splits, resuming=True, shape=other)


def test_a_worker_other_than_the_chief_only_reads_the_config_to_resume(tmp_path, monkeypatch):
    """Every worker runs `imgclf-train --resume RUN`; the chief checks the run's state, the
    others (whose chief may already have marked it `running` again) only read its config, and
    one that cannot see the run is told how to give it the config."""
    from imgclf.config import dump_config, load_config
    from imgclf.infra.errors import UserError
    from imgclf.training.resume import check_resumable

    (tmp_path / "config.yaml").write_text(dump_config(load_config(None, ["train.epochs=3"])))
    from imgclf import runs

    runs.set_state(tmp_path, runs.RUNNING)  # as the chief, resuming, marks it: alive
    cluster = {"worker": ["127.0.0.1:1", "127.0.0.1:2"]}
    monkeypatch.setenv(
        "TF_CONFIG", json.dumps({"cluster": cluster, "task": {"type": "worker", "index": 1}})
    )
    assert check_resumable(tmp_path).train.epochs == 3
    with pytest.raises(UserError, match="every worker of a multi-worker run reads it"):
        check_resumable(tmp_path / "elsewhere")
    monkeypatch.setenv(
        "TF_CONFIG", json.dumps({"cluster": cluster, "task": {"type": "worker", "index": 0}})
    )
    with pytest.raises(UserError, match="still training"):
        check_resumable(tmp_path)
    runs.set_state(tmp_path, runs.COMPLETE)  # nothing to resume: every worker says so
    for index in (0, 1):
        monkeypatch.setenv(
            "TF_CONFIG",
            json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}}),
        )
        with pytest.raises(UserError, match="already complete"):
            check_resumable(tmp_path)


def test_each_worker_reads_an_equal_disjoint_shard_of_the_training_images():
    """`data.make_dataset(shard=(count, index))`, each worker's pipeline of streamed files:
    the workers' shares do not overlap, are equal (or the worker with an extra step would wait
    forever in the all-reduce) and leave out fewer images than there are workers; every epoch
    reshuffles within the share."""
    import numpy as np

    from imgclf.config import load_config
    from imgclf.data.pipeline import make_dataset, set_epoch
    from imgclf.data.split import splits_from_arrays

    x = np.arange(23, dtype=np.uint8)[:, None, None, None] * np.ones((1, 4, 4, 1), np.uint8)
    y = np.arange(23) % 3
    config = load_config(None, ["data.image_size=[4,4]", "data.channels=1"])
    parts = {"train": (x, y), "val": (x[:3], y[:3]), "test": (x[:3], y[:3])}
    train = splits_from_arrays(config, parts, ["a", "b", "c"], "arrays").train
    seen = []
    for index in range(2):
        ds = make_dataset(train, 4, 3, shuffle=True, seed=0, shard=(2, index))
        orders = []
        for epoch in range(2):
            set_epoch(ds, epoch)
            orders.append([int(v) for images, _ in ds for v in images.numpy()[:, 0, 0, 0]])
        assert sorted(orders[0]) == sorted(orders[1]) and orders[0] != orders[1]
        seen.append(set(orders[0]))
    assert len(seen[0]) == len(seen[1]) == 23 // 2
    assert not seen[0] & seen[1] and len(set(range(23)) - seen[0] - seen[1]) < 2


def test_each_worker_computes_the_backbone_features_of_its_share_only(monkeypatch):
    """The cached head phase multi-worker (`feature_cache.Share`): each worker runs the
    backbone on every 2nd image from its index on and sends its rows (zeros elsewhere) in
    blocks; summed with the other worker's blocks (the all-reduce, here done by hand between
    two in-process "workers", on 3-row blocks), each worker's split equals the features
    computed whole: the same rows, labels and order."""
    import keras
    import numpy as np

    from imgclf.config import load_config
    from imgclf.data.split import splits_from_arrays
    from imgclf.forward import Forward
    from imgclf.training import feature_cache

    monkeypatch.setattr(feature_cache, "GATHER_ROWS", 3)  # 11 rows: 4 blocks, the last short
    rng = np.random.default_rng(0)
    x, y = rng.integers(0, 255, (11, 4, 4, 1), dtype=np.uint8), np.arange(11) % 3
    config = load_config(None, ["data.image_size=[4,4]", "data.channels=1"])
    parts = {"train": (x, y), "val": (x[:3], y[:3]), "test": (x[:3], y[:3])}
    train = splits_from_arrays(config, parts, ["a", "b", "c"], "arrays").train
    inputs = keras.Input((4, 4, 1))
    backbone = keras.Model(inputs, keras.layers.Dense(5)(keras.layers.Flatten()(inputs)))
    extractor = Forward(backbone, 4)
    whole = feature_cache.cached_split(extractor, train)
    sent: list[list] = [[], []]
    for index in range(2):  # what each worker sends, block by block
        keep = lambda *arrays, mine=sent[index]: mine.append(arrays) or arrays  # noqa: E731
        feature_cache.cached_split(extractor, train, share=feature_cache.Share(2, index, keep))
    flags = [np.concatenate([f for _, f in blocks]) for blocks in sent]
    assert list(np.flatnonzero(flags[0])) == list(range(0, 11, 2))  # worker 0: 0, 2, 4, ...
    assert list(np.flatnonzero(flags[1])) == list(range(1, 11, 2))
    for index in range(2):  # each worker again, its blocks summed with the other's
        other = iter(sent[1 - index])

        def summed(block, read, other=other):
            theirs = next(other)
            return block + theirs[0], read + theirs[1]

        share = feature_cache.Share(2, index, summed)
        got = feature_cache.cached_split(extractor, train, share=share)
        np.testing.assert_allclose(got.x, whole.x, rtol=1e-6, atol=1e-6)
        assert list(got.y) == list(whole.y)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("{'cluster': 1}", "TF_CONFIG is not JSON"),
        ('{"cluster": {"worker": ["h:1", "h:2"]}}', "TF_CONFIG has no 'task'"),
        ('{"cluster": {"worker": ["h:1"]}, "task": {"type": "worker", "index": 1}}',
         "task index 1 is not in the cluster's 1 worker"),
        ('{"cluster": {"worker": ["h:1", "h"]}, "task": {"type": "worker", "index": 0}}',
         "address 'h' has no port"),
    ],
)  # fmt: skip
def test_a_wrong_tf_config_is_one_line_before_tensorflow_sees_it(monkeypatch, value, message):
    """TensorFlow answers these with a traceback (or waits forever); imgclf checks first."""
    monkeypatch.setenv("TF_CONFIG", value)
    with pytest.raises(ConfigError, match=message):
        is_chief()
