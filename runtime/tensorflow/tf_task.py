"""One task of a topolab replay run by TensorFlow (the `tensorflow` engine).

The launcher starts one process per task, exactly as it starts the topolab runtime's tasks:
the cluster spec in TF_CONFIG ({"cluster": {"ps": [...], "worker": [...]}, "task": {"type",
"index"}}) and the job in the JSON file named by TOPOLAB_TF_JOB (the proxy model's layers and
variables in creation order, their shards, batch, steps, mode, learning rate, seed, where to
write traces). A parameter server serves its variables until the launcher stops it. A worker
builds the proxy model with TensorFlow's v1 distributed runtime:

- variables placed by `replica_device_setter` with a `ps_strategy` that puts each variable on
  the shard the topolab Plan gives it (round-robin in creation order is TensorFlow's default);
- the dense proxy: per layer `Y = X W + bias columns`, regressed onto a fixed random teacher
  (mean squared error), the same variables in the same order with the same bytes;
- sync (and backup workers): `SyncReplicasOptimizer` (replicas_to_aggregate = workers -
  backup_workers); async: plain SGD, each worker on its own;
- a `Supervisor` with recovery_wait_secs of 0.5 s (non-chief workers otherwise poll for the
  chief's variables every 30 s).

Each worker writes trace/worker-N.steps.csv (the simulator's columns), .loss.csv, .ops.csv and
.progress, and the chief writes trace/placement.json (each variable's device as TensorFlow
placed it). A synchronous worker exits right after its last step: closing the session can
block while other workers still wait on the token queue.
"""

import json
import os
import sys
import threading
import time


def fail(msg):
    print(f"tf_task: {msg}", file=sys.stderr, flush=True)
    os._exit(3)


def load():
    try:
        tf_config = json.loads(os.environ["TF_CONFIG"])
        with open(os.environ["TOPOLAB_TF_JOB"]) as f:
            job = json.load(f)
    except (KeyError, OSError, ValueError) as e:
        fail(f"cannot read TF_CONFIG / TOPOLAB_TF_JOB: {e}")
    return tf_config, job


def session_config(tf):
    # One core for compute, as the topolab runtime's tasks; a second inter-op thread lets
    # receives and sends overlap the compute.
    return tf.compat.v1.ConfigProto(
        intra_op_parallelism_threads=1,
        inter_op_parallelism_threads=2,
        allow_soft_placement=False,
    )


def build_model(tf, np, job, worker, device_fn):
    """The proxy model's variables and loss; returns (variables in creation order, loss, feeds)."""
    rng_seed = int(job["seed"])
    batch = int(job["batch"])
    variables = []
    losses = []
    feeds = []
    with tf.compat.v1.device(device_fn):
        for li, layer in enumerate(job["layers"]):
            if not layer["vars"]:
                continue
            k, n, rows = layer["k"], layer["n"], layer["rows"]
            m = batch * rows
            lvars = []
            for vi, var in enumerate(layer["vars"]):
                shape = var["shape"]
                size = 1
                for d in shape:
                    size *= d
                if vi == 0:
                    init = np.random.default_rng((rng_seed, li, vi)).standard_normal(size).astype(np.float32)
                    init *= 1.0 / np.sqrt(k)
                else:
                    init = np.zeros(size, dtype=np.float32)
                v = tf.compat.v1.get_variable(
                    var["name"], initializer=init.reshape(shape), use_resource=True
                )
                lvars.append(v)
            variables.extend(lvars)
            # The worker's data: two alternating batches of unit-row-norm inputs, and the
            # teacher's outputs for them (the teacher depends on the seed only).
            teacher = np.random.default_rng((rng_seed, 0x7EAC, li)).standard_normal((k, n)).astype(np.float32)
            gen = np.random.default_rng((rng_seed, worker, li))
            xs = [(gen.standard_normal((m, k)) / np.sqrt(k)).astype(np.float32) for _ in range(2)]
            ts = [x @ teacher for x in xs]
            x_ph = tf.compat.v1.placeholder(tf.float32, (m, k), name=f"x{li}")
            t_ph = tf.compat.v1.placeholder(tf.float32, (m, n), name=f"t{li}")
            feeds.append((x_ph, t_ph, xs, ts))
            w = tf.reshape(lvars[0], (k, n))
            y = tf.matmul(x_ph, w)
            for extra in lvars[1:]:
                s = int(np.prod(extra.shape))
                cols = np.arange(n)
                share = np.maximum(n // s + (cols % s < n % s), 1).astype(np.float32)
                y = y + tf.gather(tf.reshape(extra, (s,)), cols % s) / share
            losses.append(tf.reduce_sum(tf.square(y - t_ph)) / float(m))
    return variables, tf.add_n(losses), feeds


def feed_dict(feeds, step):
    which = step % 2
    d = {}
    for x_ph, t_ph, xs, ts in feeds:
        d[x_ph] = xs[which]
        d[t_ph] = ts[which]
    return d


def local_compute_ns(tf, np, job, worker):
    """Forward and backward of the same model on local variables: the median of five runs
    (the compute part of a step; TensorFlow does not tell it apart from the transfers)."""
    g = tf.Graph()
    with g.as_default():
        variables, loss, feeds = build_model(tf, np, job, worker, lambda op: "/cpu:0")
        grads = tf.gradients(loss, variables)
        with tf.compat.v1.Session(config=session_config(tf)) as sess:
            sess.run(tf.compat.v1.global_variables_initializer())
            times = []
            for step in range(6):
                t0 = time.monotonic_ns()
                sess.run(grads, feed_dict=feed_dict(feeds, step))
                times.append(time.monotonic_ns() - t0)
    times = sorted(times[1:])
    return times[len(times) // 2]


def main():
    tf_config, job = load()
    task = tf_config["task"]
    kind, index = task["type"], int(task["index"])
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import numpy as np
    import tensorflow as tf

    tf.compat.v1.disable_eager_execution()
    cluster = tf.train.ClusterSpec(tf_config["cluster"])
    server = tf.distribute.Server(cluster, job_name=kind, task_index=index, config=session_config(tf), start=True)
    if kind == "ps":
        print(f"tf_task: ps {index} serving on {tf_config['cluster']['ps'][index]}", file=sys.stderr, flush=True)
        server.join()
        return
    if kind != "worker":
        fail(f"unknown task type {kind}")
    trace = job["trace_dir"]
    os.makedirs(trace, exist_ok=True)
    workers = len(tf_config["cluster"]["worker"])
    is_chief = index == 0
    compute_ns = local_compute_ns(tf, np, job, index)
    shard_of = job["shard_of_var"]

    def ps_strategy(op):
        return int(shard_of.get(op.name, 0))

    setter = tf.compat.v1.train.replica_device_setter(
        ps_tasks=len(tf_config["cluster"]["ps"]),
        worker_device=f"/job:worker/task:{index}",
        cluster=cluster,
        ps_strategy=ps_strategy,
    )
    variables, loss, feeds = build_model(tf, np, job, index, setter)
    with tf.compat.v1.device(setter):
        global_step = tf.compat.v1.train.get_or_create_global_step()
    opt = tf.compat.v1.train.GradientDescentOptimizer(float(job["learning_rate"]))
    sync = job["mode"] in ("sync", "backup")
    if sync:
        opt = tf.compat.v1.train.SyncReplicasOptimizer(
            opt,
            replicas_to_aggregate=workers - int(job["backup_workers"]),
            total_num_replicas=workers,
        )
    with tf.compat.v1.device(setter):
        train_op = opt.minimize(loss, global_step=global_step, var_list=variables)
    init_op = tf.compat.v1.global_variables_initializer()
    local_init_op = None
    ready_for_local_init_op = None
    if sync:
        local_init_op = opt.chief_init_op if is_chief else opt.local_step_init_op
        ready_for_local_init_op = opt.ready_for_local_init_op
        # Built before the Supervisor finalizes the graph.
        chief_queue_runner = opt.get_chief_queue_runner()
        init_tokens_op = opt.get_init_tokens_op()
    sv = tf.compat.v1.train.Supervisor(
        is_chief=is_chief,
        logdir=None,
        init_op=init_op,
        local_init_op=local_init_op,
        ready_for_local_init_op=ready_for_local_init_op,
        recovery_wait_secs=0.5,
        global_step=global_step,
        summary_op=None,
        saver=None,
    )
    sess = sv.prepare_or_wait_for_session(server.target, config=session_config(tf))
    if sync and is_chief:
        sess.run(init_tokens_op)
        sv.start_queue_runners(sess, [chief_queue_runner])
    if is_chief:
        placement = {v.op.name: v.device for v in variables}
        with open(os.path.join(trace, "placement.json"), "w") as f:
            json.dump({"variables": placement, "tensorflow": tf.__version__}, f)
    epoch = int(job["epoch_ns"])
    var_bytes = sum(int(np.prod(v.shape)) * 4 for v in variables)
    steps = int(job["steps"])
    rows = []
    losses = []
    progress = os.path.join(trace, f"worker-{index}.progress")
    # A stuck job ends instead of hanging: no step within the job's timeout stops the task.
    last = [time.monotonic()]
    timeout = float(job["timeout_s"])

    def watchdog():
        while True:
            time.sleep(0.5)
            if time.monotonic() - last[0] > timeout:
                fail(f"worker {index}: no step completed in {timeout:.0f} s")

    threading.Thread(target=watchdog, daemon=True).start()
    # Progress and traces on stdout too (the framing of topolab's runtime/src/tracelog.rs),
    # where the launcher reads the pod's log instead of its files.
    to_stdout = bool(os.environ.get("TOPOLAB_TRACE_STDOUT"))
    step = 0
    while True:
        start = time.monotonic_ns()
        _, l = sess.run([train_op, loss], feed_dict=feed_dict(feeds, step))
        end = time.monotonic_ns()
        last[0] = time.monotonic()
        rows.append((step, start - epoch, end - epoch))
        losses.append((step, float(l)))
        step += 1
        with open(progress, "w") as f:
            f.write(str(step))
        if to_stdout:
            print(f"@topolab progress {step}", flush=True)
        if not sync:
            if step >= steps:
                break
        # SyncReplicasOptimizer aggregates any replicas_to_aggregate fresh gradients, so a fast
        # worker may count twice in a step: each worker stops when the global step reaches
        # the target, not after a fixed count of its own.
        elif sess.run(global_step) >= steps:
            break
    header = "run,worker,step,start_ns,end_ns,compute_ns,comm_ns,wait_ns,bytes_sent,bytes_received,scenario_hash,seed,version"
    with open(os.path.join(trace, f"worker-{index}.steps.csv.tmp"), "w") as f:
        f.write(header + "\n")
        for step, a, b in rows:
            dur = b - a
            c = min(compute_ns, dur)
            f.write(
                f"replay,{index},{step},{a},{b},{c},{dur - c},0,{var_bytes},{var_bytes},"
                f"{job['scenario_hash']},{job['seed']},{job['version']}\n"
            )
    os.replace(os.path.join(trace, f"worker-{index}.steps.csv.tmp"), os.path.join(trace, f"worker-{index}.steps.csv"))
    with open(os.path.join(trace, f"worker-{index}.loss.csv"), "w") as f:
        f.write("worker,step,loss\n")
        for step, l in losses:
            f.write(f"{index},{step},{l}\n")
    with open(os.path.join(trace, f"worker-{index}.ops.csv"), "w") as f:
        f.write("worker,step,op,index,bytes,start_ns,end_ns\n")
    if to_stdout:
        for kind in ("steps", "ops", "loss"):
            name = f"worker-{index}.{kind}.csv"
            with open(os.path.join(trace, name)) as f:
                text = f.read()
            lines = text.splitlines()
            out = "".join(f"@topolab line {name} {line}\n" for line in lines)
            sys.stdout.write(out + f"@topolab end {name} {len(lines)} {len(text.encode())}\n")
    sys.stdout.flush()
    sys.stderr.flush()
    # Exit at once: closing a synchronous session can block on the other workers' tokens.
    os._exit(0)


if __name__ == "__main__":
    main()
