//! The Kubernetes launcher: a job's tasks as pods of a cluster, through kube-rs.
//!
//! [`Pods::start`] creates the job's objects ([`crate::k8s::objects`]: the parent ConfigMap
//! first, everything else owned by it), with the job's token in its Secret. One task then
//! watches the job's pods (a watch, resumed from the last resource version when the server
//! ends it; no polling of the API) and, as each pod's container starts, follows its log
//! (`follow=true`): the task's own lines go to the run's `logs/ROLE-INDEX.log`, its progress
//! and trace files come back through [`crate::tracelog`] into the run's `trace` directory. A
//! pod that fails or cannot start (OOMKilled, ErrImagePull, Unschedulable, ...) fails the job
//! with the pod's reason and Kubernetes' message. [`Pods::stop`] deletes the parent in the
//! foreground and whatever still carries the job's label, then waits (a watch again) until
//! every pod is gone: no shard keeps running after the workers are done, on success, failure
//! or Ctrl-C. `topolab replay --cleanup --launcher k8s` removes what a killed launcher left
//! ([`cleanup`], by label).
//!
//! The pods' traces use each node's monotonic clock: on kind (one kernel) they line up across
//! pods; on a cluster of several machines the run's span mixes clocks (step times, measured
//! within one pod, do not).

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::{AsyncBufReadExt, StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, ListParams, LogParams, WatchEvent, WatchParams};
use topolab_core::scenario::{Scenario, TopologyKind};

use crate::checkpoint;
use crate::cluster::Job;
use crate::k8s::{self, CheckpointVolume, INDEX_LABEL, JOB_LABEL, ManifestOptions, ROLE_LABEL};
use crate::launcher::{Engine, Launcher, LauncherKind, NetworkInfo, ReplayError, ReplayOptions, TaskCounts};
use crate::tracelog::{self, Line};

/// The cluster a Kubernetes replay runs on.
#[derive(Debug, Clone, PartialEq)]
pub struct Target {
    /// Kubeconfig context (`None`: the current one).
    pub context: Option<String>,
    /// Namespace of the job's objects.
    pub namespace: String,
    /// Image with `/usr/local/bin/topolab`.
    pub image: String,
    /// Where the shards' checkpoints go.
    pub checkpoints: CheckpointVolume,
}

/// What the watch and the log followers learned, read by [`Launcher::poll`].
#[derive(Debug, Default)]
struct State {
    /// Pod name → (task, phase).
    pods: BTreeMap<String, (String, String)>,
    /// Worker index → steps completed.
    progress: BTreeMap<u32, u64>,
    /// Trace files complete in the run's trace directory.
    files: BTreeSet<String>,
    /// Tasks whose log stream ended.
    logs_done: BTreeSet<String>,
    /// The first pod that failed: its task, and reason and message in words.
    failure: Option<(String, String)>,
    /// A request, watch or log that failed.
    error: Option<String>,
}

/// Tasks as pods.
pub struct Pods {
    rt: tokio::runtime::Runtime,
    client: kube::Client,
    target: Target,
    job: String,
    out: PathBuf,
    timeout_s: u64,
    workers: u32,
    ps: u32,
    start_step: u64,
    state: Arc<Mutex<State>>,
    watcher: Option<tokio::task::JoinHandle<()>>,
    /// Objects of the job may exist in the cluster.
    created: bool,
    /// The pods run real TensorFlow (an image with it) instead of `topolab node`.
    tensorflow: bool,
}

fn io(e: impl std::fmt::Display) -> ReplayError {
    ReplayError::Io(e.to_string())
}

fn runtime() -> Result<tokio::runtime::Runtime, ReplayError> {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().map_err(io)
}

impl Pods {
    /// A launcher for the cluster of `target.context`; the job's objects are named after
    /// `scenario` with a random suffix, so that two replays never share a name.
    pub fn connect(
        target: Target,
        engine: &Engine,
        scenario: &str,
        out: &Path,
        timeout_s: u64,
    ) -> Result<Pods, ReplayError> {
        let rt = runtime()?;
        let (client, _) = rt
            .block_on(k8s::client(target.context.as_deref()))
            .map_err(|e| ReplayError::Refused { scenario: scenario.into(), reason: e.to_string() })?;
        let mut pods = Pods::with_client(rt, client, target, scenario, out, timeout_s);
        pods.tensorflow = matches!(engine, Engine::Tensorflow(_));
        Ok(pods)
    }

    fn with_client(
        rt: tokio::runtime::Runtime,
        client: kube::Client,
        target: Target,
        scenario: &str,
        out: &Path,
        timeout_s: u64,
    ) -> Pods {
        let mut base = k8s::dns_label(scenario);
        base.truncate(33);
        let suffix = &crate::wire::Token::random().hex()[..6];
        Pods {
            rt,
            client,
            target,
            job: format!("{}-{suffix}", base.trim_end_matches('-')),
            out: out.into(),
            timeout_s,
            workers: 0,
            ps: 0,
            start_step: 0,
            state: Arc::default(),
            watcher: None,
            created: false,
            tensorflow: false,
        }
    }

    /// The job's name (every object's prefix and its `topolab.dev/job` label).
    pub fn job(&self) -> &str {
        &self.job
    }
}

impl Drop for Pods {
    fn drop(&mut self) {
        let _ = self.stop();
    }
}

impl Launcher for Pods {
    fn kind(&self) -> LauncherKind {
        LauncherKind::K8s
    }

    fn network(&self) -> NetworkInfo {
        NetworkInfo {
            kernel_latency: false,
            latency_method: String::new(),
            congestion_control: "the cluster nodes' own (not measured)".into(),
            congestion_warning: None,
        }
    }

    fn refusal(&self, s: &Scenario, opts: &ReplayOptions) -> Option<String> {
        let why = if s.spec.topology.kind == TopologyKind::AllReduce {
            "an all-reduce on Kubernetes: the manifests describe parameter-server jobs (a ring needs every worker's address before it starts), which is not built yet; replay it with --launcher local or netns"
        } else if !s.spec.faults.kills.is_empty() {
            "faults.kills on Kubernetes: a restart starts from the last checkpoint on the cluster's volume, which the launcher does not read yet; replay kills with --launcher local or netns"
        } else if opts.resume {
            "--resume on Kubernetes: the checkpoints are on the cluster's volume, which the launcher does not read yet"
        } else if matches!(opts.engine, Engine::Tensorflow(_)) != self.tensorflow {
            "the launcher was made for another engine than the replay's"
        } else if self.tensorflow && s.spec.network.latency.0 > 0 {
            "network.latency with --engine tensorflow on Kubernetes: topolab does not shape the cluster's network and TensorFlow's gRPC cannot emulate latency; set latency = \"0 us\" or use the topolab engine"
        } else {
            return None;
        };
        Some(why.into())
    }

    fn start(&mut self, s: &Scenario, job: &Job) -> Result<(), ReplayError> {
        let t = &s.spec.topology;
        (self.workers, self.ps, self.start_step) = (t.workers, t.ps, job.start_step);
        *self.state.lock().expect("state") = State::default();
        let eff_toml = std::fs::read_to_string(&job.scenario).map_err(io)?;
        let layers = std::fs::read_to_string(self.out.join("effective-model.csv")).map_err(io)?;
        let opts = ManifestOptions {
            job: self.job.clone(),
            namespace: self.target.namespace.clone(),
            image: self.target.image.clone(),
            checkpoints: self.target.checkpoints.clone(),
            timeout_s: self.timeout_s,
            tensorflow: if self.tensorflow { Some(pod_tf_job(&self.out)?) } else { None },
        };
        let mut objects = k8s::objects(s, &eff_toml, &layers, &opts)
            .map_err(|e| ReplayError::Refused { scenario: s.spec.name.clone(), reason: e.to_string() })?;
        // What was created, for the record (the token left out).
        checkpoint::write_atomic(&self.out.join("job.yaml"), k8s::to_yaml(&objects, "(not recorded)").as_bytes())
            .map_err(io)?;
        for o in objects.iter_mut().filter(|o| o["kind"] == "Secret") {
            o["stringData"]["token"] = serde_json::json!(job.token);
        }
        self.created = true;
        let ns = self.target.namespace.clone();
        self.rt.block_on(k8s::create(&self.client, &ns, &objects)).map_err(io)?;
        let watch = watch_pods(
            self.client.clone(),
            ns,
            self.job.clone(),
            self.state.clone(),
            self.out.join("logs"),
            self.out.join("trace"),
        );
        self.watcher = Some(self.rt.spawn(watch));
        Ok(())
    }

    fn progress(&mut self) -> Vec<u64> {
        let st = self.state.lock().expect("state");
        (0..self.workers).map(|i| st.progress.get(&i).copied().unwrap_or(self.start_step)).collect()
    }

    fn poll(&mut self) -> Result<TaskCounts, ReplayError> {
        let st = self.state.lock().expect("state");
        if let Some((task, status)) = &st.failure {
            let log = self.out.join("logs").join(format!("{}.log", task.replace(' ', "-")));
            return Err(ReplayError::TaskFailed {
                task: task.clone(),
                status: status.clone(),
                log: log.display().to_string(),
                tail: crate::processes::tail(&log, 10),
            });
        }
        if let Some(e) = &st.error {
            return Err(ReplayError::Io(e.clone()));
        }
        let done = |role: &str| st.pods.values().filter(|(t, p)| t.starts_with(role) && p == "Succeeded").count();
        Ok(TaskCounts {
            workers_running: self.workers as usize - done("worker").min(self.workers as usize),
            ps_running: self.ps as usize - done("ps").min(self.ps as usize),
        })
    }

    fn kill(&mut self, task: &str) -> Result<(), ReplayError> {
        let name = match task.split_once(' ') {
            Some((role, index)) => format!("{}-{role}-{index}", self.job),
            None => return Ok(()),
        };
        let api = Api::<Pod>::namespaced(self.client.clone(), &self.target.namespace);
        let now = DeleteParams { grace_period_seconds: Some(0), ..DeleteParams::default() };
        self.rt.block_on(api.delete(&name, &now)).map(drop).map_err(|e| io(format!("deleting pod {name}: {e}")))
    }

    fn stop(&mut self) -> Result<(), ReplayError> {
        if let Some(w) = self.watcher.take() {
            w.abort();
        }
        if !self.created {
            return Ok(());
        }
        let (client, ns, job) = (self.client.clone(), self.target.namespace.clone(), self.job.clone());
        let timeout = Duration::from_secs(self.timeout_s.max(60));
        self.rt
            .block_on(async move {
                k8s::delete(&client, &ns, &job).await.map_err(|e| e.to_string())?;
                gone(&client, &ns, &job, timeout).await
            })
            .map_err(|e| {
                io(format!(
                    "{e}; `topolab replay --cleanup --launcher k8s --namespace {}` removes what is left",
                    self.target.namespace
                ))
            })?;
        self.created = false;
        Ok(())
    }

    fn collect(&mut self, trace: &Path) -> Result<(), ReplayError> {
        // Every worker's three files, as its log followers write them into `trace`.
        let want: Vec<String> =
            (0..self.workers).flat_map(|i| ["steps", "ops", "loss"].map(|k| format!("worker-{i}.{k}.csv"))).collect();
        debug_assert_eq!(trace, self.out.join("trace"));
        let deadline = Instant::now() + Duration::from_secs(self.timeout_s);
        loop {
            {
                let st = self.state.lock().expect("state");
                if let Some(e) = &st.error {
                    return Err(ReplayError::Io(e.clone()));
                }
                let missing: Vec<&String> = want.iter().filter(|f| !st.files.contains(*f)).collect();
                if missing.is_empty() {
                    return Ok(());
                }
                let ended = (0..self.workers).all(|i| st.logs_done.contains(&format!("worker {i}")));
                if ended || Instant::now() > deadline {
                    return Err(ReplayError::Io(format!(
                        "the workers finished but their logs {} {}: the traces come back through the pods' logs",
                        if ended { "ended without" } else { "did not bring, in time," },
                        missing.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ")
                    )));
                }
            }
            if crate::launcher::interrupted() {
                return Err(ReplayError::Interrupted);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// The TensorFlow task program's job as the coordinator wrote it next to the run, for pods:
/// traces in the pod's own directory, times from the node's monotonic clock.
fn pod_tf_job(out: &Path) -> Result<serde_json::Value, ReplayError> {
    let p = out.join(crate::launcher::TF_JOB);
    let text = std::fs::read_to_string(&p).map_err(|e| io(format!("{}: {e}", p.display())))?;
    let mut j: serde_json::Value = serde_json::from_str(&text).map_err(|e| io(format!("{}: {e}", p.display())))?;
    j["trace_dir"] = serde_json::json!(format!("{}/trace", k8s::OUT_DIR));
    j["epoch_ns"] = serde_json::json!(0);
    Ok(j)
}

/// The task ("worker 1") a pod runs, from its labels.
fn task_of(pod: &Pod) -> Option<(String, String, u32)> {
    let labels = pod.metadata.labels.as_ref()?;
    let role = labels.get(ROLE_LABEL)?.clone();
    let index: u32 = labels.get(INDEX_LABEL)?.parse().ok()?;
    Some((format!("{role} {index}"), role, index))
}

/// Watches the job's pods: their phases, the first failure, and a log follower per started
/// container. Resumes from the last resource version when the server ends the watch.
async fn watch_pods(
    client: kube::Client,
    ns: String,
    job: String,
    state: Arc<Mutex<State>>,
    logs: PathBuf,
    trace: PathBuf,
) {
    let api = Api::<Pod>::namespaced(client, &ns);
    let params = WatchParams::default().labels(&format!("{JOB_LABEL}={job}"));
    let mut version = "0".to_string();
    let mut following = BTreeSet::new();
    let fail = |e: String| state.lock().expect("state").error = Some(e);
    loop {
        let mut stream = match api.watch(&params, &version).await {
            Ok(s) => s.boxed(),
            Err(e) => return fail(format!("watching the pods of {job}: {e}")),
        };
        loop {
            let pod = match stream.try_next().await {
                Ok(Some(WatchEvent::Added(p) | WatchEvent::Modified(p))) => p,
                Ok(Some(WatchEvent::Bookmark(b))) => {
                    version = b.metadata.resource_version;
                    continue;
                }
                Ok(Some(WatchEvent::Deleted(_))) => continue,
                // The version is too old (410 Gone): from the current state again.
                Ok(Some(WatchEvent::Error(e))) if e.code == 410 => {
                    version = "0".into();
                    break;
                }
                Ok(Some(WatchEvent::Error(e))) => return fail(format!("watching the pods of {job}: {}", e.message)),
                Ok(None) => break,
                Err(e) => return fail(format!("watching the pods of {job}: {e}")),
            };
            if let Some(v) = &pod.metadata.resource_version {
                version = v.clone();
            }
            let Some((task, role, index)) = task_of(&pod) else { continue };
            let name = pod.metadata.name.clone().unwrap_or_default();
            let phase = pod.status.as_ref().and_then(|s| s.phase.clone()).unwrap_or_default();
            {
                let mut st = state.lock().expect("state");
                if let Some((reason, message)) = k8s::pod_failure(&pod)
                    && st.failure.is_none()
                {
                    st.failure = Some((task.clone(), format!("pod {name}: {reason}: {message}")));
                }
                st.pods.insert(name.clone(), (task.clone(), phase.clone()));
            }
            // Its log, once its container has started (before, the API answers 400).
            if ["Running", "Succeeded", "Failed"].contains(&phase.as_str()) && following.insert(name.clone()) {
                let log = logs.join(format!("{role}-{index}.log"));
                let follow = follow_log(
                    api.clone(),
                    name,
                    task,
                    (role == "worker").then_some(index),
                    log,
                    trace.clone(),
                    state.clone(),
                );
                tokio::spawn(follow);
            }
        }
    }
}

/// Follows pod `pod`'s log to its end: the task's lines into `log`, its progress and its trace
/// files (a worker's: `worker-INDEX.*`) into the state and `trace`.
async fn follow_log(
    api: Api<Pod>,
    pod: String,
    task: String,
    worker: Option<u32>,
    log: PathBuf,
    trace: PathBuf,
    state: Arc<Mutex<State>>,
) {
    let fail = |e: String| {
        let mut st = state.lock().expect("state");
        st.error.get_or_insert(e);
        st.logs_done.insert(task.clone());
    };
    let params = LogParams { follow: true, container: Some("task".into()), ..LogParams::default() };
    let stream = match api.log_stream(&pod, &params).await {
        Ok(s) => s,
        Err(e) => return fail(format!("reading the log of pod {pod}: {e}")),
    };
    let mut file = match std::fs::File::create(&log) {
        Ok(f) => f,
        Err(e) => return fail(format!("{}: {e}", log.display())),
    };
    let _ = std::fs::create_dir_all(&trace);
    let mut reader = tracelog::Reader::new();
    let mut lines = stream.lines();
    loop {
        let line = match lines.try_next().await {
            Ok(Some(l)) => l,
            Ok(None) => break,
            Err(e) => return fail(format!("reading the log of pod {pod}: {e}")),
        };
        match reader.line(&line) {
            Ok(Line::Log(text)) => {
                let _ = writeln!(file, "{text}");
            }
            Ok(Line::Part) => {}
            Ok(Line::Progress(n)) => {
                if let Some(i) = worker {
                    state.lock().expect("state").progress.insert(i, n);
                }
            }
            Ok(Line::File(name, text)) => {
                if worker.is_none_or(|i| !name.starts_with(&format!("worker-{i}."))) {
                    return fail(format!("the log of pod {pod} carries a trace file of another task: {name}"));
                }
                if let Err(e) = checkpoint::write_atomic(&trace.join(&name), text.as_bytes()) {
                    return fail(format!("{}: {e}", trace.join(&name).display()));
                }
                state.lock().expect("state").files.insert(name);
            }
            Err(e) => return fail(format!("the log of pod {pod}: {e}")),
        }
    }
    state.lock().expect("state").logs_done.insert(task);
}

/// Waits (a watch) until no pod of job `job` is left, at most `timeout`.
async fn gone(client: &kube::Client, ns: &str, job: &str, timeout: Duration) -> Result<(), String> {
    let api = Api::<Pod>::namespaced(client.clone(), ns);
    let selector = format!("{JOB_LABEL}={job}");
    let list = api
        .list(&ListParams::default().labels(&selector))
        .await
        .map_err(|e| format!("listing the pods of {job}: {e}"))?;
    let mut left: BTreeSet<String> = list.items.iter().filter_map(|p| p.metadata.name.clone()).collect();
    if left.is_empty() {
        return Ok(());
    }
    let version = list.metadata.resource_version.unwrap_or_else(|| "0".into());
    let wait = async {
        let mut stream = api
            .watch(&WatchParams::default().labels(&selector), &version)
            .await
            .map_err(|e| format!("watching the pods of {job} go: {e}"))?
            .boxed();
        while let Some(ev) = stream.try_next().await.map_err(|e| format!("watching the pods of {job} go: {e}"))? {
            if let WatchEvent::Deleted(p) = ev {
                left.remove(p.metadata.name.as_deref().unwrap_or(""));
                if left.is_empty() {
                    return Ok(());
                }
            }
        }
        Err(format!("the watch ended with pods of {job} still there"))
    };
    tokio::time::timeout(timeout, wait)
        .await
        .map_err(|_| format!("pods of {job} still terminating after {} s", timeout.as_secs()))?
}

/// Deletes every job topolab left in namespace `ns` of the cluster of `context` (found by
/// the `app.kubernetes.io/managed-by=topolab` label): the jobs' names.
pub fn cleanup(context: Option<&str>, ns: &str) -> Result<Vec<String>, ReplayError> {
    let rt = runtime()?;
    rt.block_on(async {
        let (client, _) = k8s::client(context).await.map_err(io)?;
        cleanup_with(&client, ns).await
    })
}

/// [`cleanup`] with a client: every job named by a parent or a pod that carries topolab's
/// label, deleted as [`k8s::delete`] does.
async fn cleanup_with(client: &kube::Client, ns: &str) -> Result<Vec<String>, ReplayError> {
    use k8s_openapi::api::core::v1::ConfigMap;
    let selector = "app.kubernetes.io/managed-by=topolab";
    let mut jobs = BTreeSet::new();
    let parents = Api::<ConfigMap>::namespaced(client.clone(), ns)
        .list(&ListParams::default().labels(selector))
        .await
        .map_err(|e| io(format!("listing topolab's objects in {ns}: {e}")))?;
    let pods = Api::<Pod>::namespaced(client.clone(), ns)
        .list(&ListParams::default().labels(selector))
        .await
        .map_err(|e| io(format!("listing topolab's pods in {ns}: {e}")))?;
    for m in parents.items.iter().map(|c| &c.metadata).chain(pods.items.iter().map(|p| &p.metadata)) {
        if let Some(j) = m.labels.as_ref().and_then(|l| l.get(JOB_LABEL)) {
            jobs.insert(j.clone());
        }
    }
    for j in &jobs {
        k8s::delete(client, ns, j).await.map_err(io)?;
    }
    Ok(jobs.into_iter().collect())
}

#[cfg(test)]
mod tests {
    //! A whole Kubernetes replay against a fake API server in-process (kube-rs's tower mock):
    //! the coordinator creates the job, watches it, reads the pods' logs back into the run's
    //! traces, and deletes everything, on success and when a pod fails.
    use super::*;
    use http::{Method, Request, Response};
    use kube::client::Body;
    use serde_json::{Value, json};
    use topolab_core::records::{self, StepRecord};

    type Handle = tower_test::mock::Handle<Request<Body>, Response<Body>>;

    const STEPS: u64 = 3;

    fn scenario() -> Scenario {
        Scenario::parse(
            &format!(
                "name = \"fake\"\nbatch = 8\n[model]\nname = \"alexnet\"\n[topology]\nworkers = 2\nps = 1\n[training]\nsteps = {STEPS}\n[runtime]\nscale = {{ params = 0.0001, flops = 0.00001 }}\n"
            ),
            "fake.toml",
            "fake",
            None,
        )
        .unwrap()
    }

    /// What worker `w` prints: its own lines, progress, and its three trace files.
    fn worker_log(w: u32) -> String {
        let mut out = Vec::new();
        writeln!(out, "worker{w}: connected to 1 shard").unwrap();
        let mut steps = Vec::new();
        for step in 0..STEPS {
            tracelog::progress(&mut out, step + 1).unwrap();
            let start = 1_000_000 * step + u64::from(w);
            steps.push(StepRecord {
                run: "replay".into(),
                worker: w,
                step,
                start_ns: start,
                end_ns: start + 900_000,
                compute_ns: 600_000,
                comm_ns: 200_000,
                wait_ns: 100_000,
                bytes_sent: 4096,
                bytes_received: 4096,
                scenario_hash: "h".into(),
                seed: 0,
                version: records::VERSION.into(),
            });
        }
        let mut csv = Vec::new();
        records::write_steps_csv(&steps, &mut csv).unwrap();
        tracelog::file(&mut out, &format!("worker-{w}.steps.csv"), std::str::from_utf8(&csv).unwrap()).unwrap();
        let ops = format!(
            "worker,step,op,index,bytes,start_ns,end_ns\n{w},0,pull,0,4096,0,100000\n{w},0,push,0,4096,700000,900000\n"
        );
        tracelog::file(&mut out, &format!("worker-{w}.ops.csv"), &ops).unwrap();
        let loss: String = (0..STEPS).map(|s| format!("{w},{s},{}\n", 1.0 / (s + 1) as f64)).collect();
        tracelog::file(&mut out, &format!("worker-{w}.loss.csv"), &format!("worker,step,loss\n{loss}")).unwrap();
        writeln!(out, "worker{w}: {STEPS} steps in 0.01 s").unwrap();
        String::from_utf8(out).unwrap()
    }

    fn pod(name: &str, role: &str, index: u32, version: u32, status: Value) -> Value {
        let kind = if version == 1 { "ADDED" } else { "MODIFIED" };
        json!({"type": kind, "object": {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": "training",
            "resourceVersion": version.to_string(),
            "labels": {JOB_LABEL: "@JOB@", ROLE_LABEL: role, INDEX_LABEL: index.to_string()}}, "status": status}})
    }

    /// The fake cluster: answers creates (the parent gets a UID), the first pod watch with
    /// `events` (a later one stays open, as a quiet watch does), each pod's log, deletes and
    /// lists; returns every request as "METHOD path" in order.
    async fn serve(mut h: Handle, events: Vec<Value>, logs: BTreeMap<String, String>) -> Vec<String> {
        let mut seen = Vec::new();
        let mut quiet = Vec::new();
        let mut watches = 0;
        let mut job = String::new();
        while let Some((req, send)) = h.next_request().await {
            let method = req.method().clone();
            let uri = req.uri().to_string();
            let path = req.uri().path().to_string();
            let bytes = req.into_body().collect_bytes().await.unwrap();
            let body: Value = if bytes.is_empty() { Value::Null } else { serde_json::from_slice(&bytes).unwrap() };
            seen.push(format!("{method} {}", uri.split('?').next().unwrap()));
            let reply = |v: Value| Response::new(Body::from(serde_json::to_vec(&v).unwrap()));
            match method {
                Method::POST => {
                    let mut b = body.clone();
                    if b["kind"] == "ConfigMap" {
                        job = b["metadata"]["name"].as_str().unwrap().to_string();
                        b["metadata"]["uid"] = json!("uid-parent");
                    } else {
                        assert_eq!(b["metadata"]["ownerReferences"][0]["uid"], "uid-parent", "{uri}");
                    }
                    send.send_response(reply(b));
                }
                Method::GET if uri.contains("watch=true") && path.ends_with("/pods") => {
                    assert!(uri.contains(&format!("labelSelector=topolab.dev%2Fjob%3D{job}")), "{uri}");
                    watches += 1;
                    if watches == 1 {
                        let lines: String = events
                            .iter()
                            .map(|e| {
                                format!(
                                    "{}\n",
                                    e.to_string().replace("@JOB@", &job).replace("fake-", &format!("{job}-"))
                                )
                            })
                            .collect();
                        send.send_response(Response::new(Body::from(lines.into_bytes())));
                    } else {
                        quiet.push(send);
                    }
                }
                Method::GET if path.ends_with("/log") => {
                    assert!(uri.contains("follow=true") && uri.contains("container=task"), "{uri}");
                    let pod = path.rsplit('/').nth(1).unwrap().replace(&format!("{job}-"), "fake-");
                    let text = logs.get(&pod).cloned().unwrap_or_default();
                    send.send_response(Response::new(Body::from(text.into_bytes())));
                }
                Method::GET if path.ends_with("/pods") => {
                    send.send_response(reply(json!({"apiVersion": "v1", "kind": "PodList", "metadata": {"resourceVersion": "9"}, "items": []})));
                }
                Method::DELETE if path.ends_with(&format!("/configmaps/{job}")) => {
                    assert_eq!(body["propagationPolicy"], "Foreground", "dependents go with the parent");
                    send.send_response(reply(
                        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": job}}),
                    ));
                }
                Method::DELETE if path.ends_with("/pods") => {
                    assert!(uri.contains(&format!("labelSelector=topolab.dev%2Fjob%3D{job}")), "{uri}");
                    send.send_response(reply(
                        json!({"apiVersion": "v1", "kind": "PodList", "metadata": {}, "items": []}),
                    ));
                }
                _ => panic!("unexpected request {method} {uri}"),
            }
        }
        drop(quiet);
        seen
    }

    /// A launcher for namespace "training" whose client talks to `service`.
    fn fake_pods(service: tower_test::mock::Mock<Request<Body>, Response<Body>>, out: &Path) -> Pods {
        let rt = runtime().unwrap();
        // The client's buffer task runs on the launcher's runtime.
        let client = {
            let _in = rt.enter();
            kube::Client::new(service, "training")
        };
        let target = Target {
            context: None,
            namespace: "training".into(),
            image: "topolab:test".into(),
            checkpoints: CheckpointVolume::HostPath("/var/lib/topolab/checkpoints".into()),
        };
        Pods::with_client(rt, client, target, "fake", out, 30)
    }

    /// Replays in this module one at a time: an interrupt is process-wide.
    static SERIAL: Mutex<()> = Mutex::new(());

    fn run(
        events: Vec<Value>,
        logs: BTreeMap<String, String>,
        out: &Path,
    ) -> (Result<crate::launcher::ReplayOutcome, ReplayError>, Vec<String>) {
        run_interrupted(events, logs, out, None)
    }

    /// [`run`], with Ctrl-C `after` this long.
    fn run_interrupted(
        events: Vec<Value>,
        logs: BTreeMap<String, String>,
        out: &Path,
        after: Option<Duration>,
    ) -> (Result<crate::launcher::ReplayOutcome, ReplayError>, Vec<String>) {
        let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        let server_rt = runtime().unwrap();
        let _one = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
        let server = server_rt.spawn(serve(handle, events, logs));
        let mut pods = fake_pods(service, out);
        let ctrl_c = after.map(|d| {
            std::thread::spawn(move || {
                std::thread::sleep(d);
                crate::launcher::interrupt();
            })
        });
        let opts = ReplayOptions {
            launcher: LauncherKind::K8s,
            engine: Engine::Topolab,
            exe: PathBuf::from("/usr/local/bin/topolab"),
            out: out.into(),
            resume: false,
            timeout_s: 30,
            progress: None,
        };
        let outcome = crate::launcher::replay_with(&scenario(), &opts, &mut pods);
        if let Some(c) = ctrl_c {
            c.join().unwrap();
        }
        drop(pods);
        let seen =
            server_rt.block_on(async { tokio::time::timeout(Duration::from_secs(10), server).await.unwrap().unwrap() });
        (outcome, seen)
    }

    fn out_dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("topolab-pods-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    #[test]
    fn a_kubernetes_replay_creates_watches_reads_the_traces_from_the_logs_and_deletes_everything() {
        let out = out_dir("ok");
        let events = vec![
            pod("fake-ps-0", "ps", 0, 1, json!({"phase": "Running"})),
            pod("fake-worker-0", "worker", 0, 2, json!({"phase": "Running"})),
            pod("fake-worker-1", "worker", 1, 3, json!({"phase": "Running"})),
            pod("fake-worker-0", "worker", 0, 4, json!({"phase": "Succeeded"})),
            pod("fake-worker-1", "worker", 1, 5, json!({"phase": "Succeeded"})),
            pod("fake-ps-0", "ps", 0, 6, json!({"phase": "Succeeded"})),
        ];
        let logs: BTreeMap<String, String> = [
            ("fake-worker-0".to_string(), worker_log(0)),
            ("fake-worker-1".to_string(), worker_log(1)),
            ("fake-ps-0".to_string(), "ps0: every worker is done; final parameters written\n".to_string()),
        ]
        .into();
        let (outcome, seen) = run(events, logs, &out);
        let outcome = outcome.unwrap();
        // Both workers' steps came back through their logs and were merged.
        assert_eq!(outcome.steps.len(), 2 * STEPS as usize);
        assert_eq!(outcome.summary.replay.as_ref().unwrap().launcher, "k8s");
        assert_eq!(outcome.loss.len(), STEPS as usize);
        let steps_csv = std::fs::read_to_string(out.join("steps.csv")).unwrap();
        assert_eq!(steps_csv.lines().count(), 1 + 2 * STEPS as usize);
        // The task's own lines are its log; the framing lines are not.
        let log = std::fs::read_to_string(out.join("logs/worker-1.log")).unwrap();
        assert!(log.contains("worker1: 3 steps") && !log.contains("@topolab"), "{log}");
        assert!(std::fs::read_to_string(out.join("logs/ps-0.log")).unwrap().contains("every worker is done"));
        // Creates (parent first), a watch, the logs, then deletion and the wait for the pods to go.
        assert!(seen[0].ends_with("/configmaps"), "{seen:?}");
        let first_delete = seen.iter().position(|r| r.starts_with("DELETE")).unwrap();
        assert!(seen[first_delete].contains("/configmaps/fake-"), "{seen:?}");
        assert!(seen[..first_delete].iter().filter(|r| r.ends_with("/log")).count() == 3, "{seen:?}");
        assert!(seen[first_delete + 1].starts_with("DELETE") && seen[first_delete + 1].ends_with("/pods"), "{seen:?}");
        assert!(seen.last().unwrap().starts_with("GET") && seen.last().unwrap().ends_with("/pods"), "{seen:?}");
        let _ = std::fs::remove_dir_all(&out);
    }

    #[test]
    fn a_pod_killed_for_memory_fails_the_replay_with_its_reason_and_the_job_is_deleted() {
        let out = out_dir("oom");
        let killed = json!({"phase": "Failed", "containerStatuses": [{
            "name": "task", "image": "topolab:test", "imageID": "", "ready": false, "restartCount": 0,
            "state": {"terminated": {"exitCode": 137, "reason": "OOMKilled", "message": "memory limit 96Mi"}},
        }]});
        let events = vec![
            pod("fake-ps-0", "ps", 0, 1, json!({"phase": "Running"})),
            pod("fake-worker-1", "worker", 1, 2, json!({"phase": "Running"})),
            pod("fake-worker-1", "worker", 1, 3, killed),
        ];
        let logs: BTreeMap<String, String> =
            [("fake-worker-1".to_string(), "worker1: connected to 1 shard\n".to_string())].into();
        let (outcome, seen) = run(events, logs, &out);
        let e = outcome.unwrap_err().to_string();
        assert!(e.contains("task worker 1 failed") && e.contains("OOMKilled: memory limit 96Mi"), "{e}");
        assert!(seen.iter().any(|r| r.starts_with("DELETE") && r.contains("/configmaps/fake-")), "{seen:?}");
        assert!(seen.iter().any(|r| r.starts_with("DELETE") && r.ends_with("/pods")), "{seen:?}");
        assert!(!out.join("summary.json").exists());
        let _ = std::fs::remove_dir_all(&out);
    }

    #[test]
    fn what_kubernetes_cannot_replay_yet_is_refused_before_anything_is_created() {
        let (service, _handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        let out = out_dir("refused");
        let pods = fake_pods(service, &out);
        let opts = ReplayOptions {
            launcher: LauncherKind::K8s,
            engine: Engine::Topolab,
            exe: PathBuf::from("topolab"),
            out: out.clone(),
            resume: true,
            timeout_s: 30,
            progress: None,
        };
        assert!(pods.refusal(&scenario(), &opts).unwrap().contains("--resume"));
        assert!(pods.job().starts_with("fake-") && pods.job().len() == 11, "{}", pods.job());
    }

    #[test]
    fn ctrl_c_during_a_kubernetes_replay_deletes_the_job() {
        let out = out_dir("interrupt");
        // The pods run and never finish; Ctrl-C comes after the first step.
        let events = vec![
            pod("fake-ps-0", "ps", 0, 1, json!({"phase": "Running"})),
            pod("fake-worker-0", "worker", 0, 2, json!({"phase": "Running"})),
        ];
        let logs: BTreeMap<String, String> =
            [("fake-worker-0".to_string(), "@topolab progress 1\n".to_string())].into();
        let (outcome, seen) = run_interrupted(events, logs, &out, Some(Duration::from_millis(500)));
        assert!(matches!(outcome, Err(ReplayError::Interrupted)), "{outcome:?}");
        assert!(seen.iter().any(|r| r.starts_with("DELETE") && r.contains("/configmaps/fake-")), "{seen:?}");
        assert!(seen.iter().any(|r| r.starts_with("DELETE") && r.ends_with("/pods")), "{seen:?}");
        let _ = std::fs::remove_dir_all(&out);
    }

    #[tokio::test]
    async fn cleanup_deletes_every_job_found_by_label_parents_and_orphan_pods() {
        let (service, mut h) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        let client = kube::Client::new(service, "training");
        let server = tokio::spawn(async move {
            let mut deleted = Vec::new();
            while let Some((req, send)) = h.next_request().await {
                let uri = req.uri().to_string();
                let reply = |v: Value| Response::new(Body::from(serde_json::to_vec(&v).unwrap()));
                if req.method() == Method::GET {
                    assert!(uri.contains("labelSelector=app.kubernetes.io%2Fmanaged-by%3Dtopolab"), "{uri}");
                    let (kind, job) =
                        if uri.contains("/configmaps") { ("ConfigMap", "left-1") } else { ("Pod", "orphan-2") };
                    send.send_response(reply(
                        json!({"apiVersion": "v1", "kind": format!("{kind}List"), "metadata": {},
                        "items": [{"metadata": {"name": format!("{job}-x"), "labels": {JOB_LABEL: job}}}]}),
                    ));
                } else {
                    assert_eq!(req.method(), Method::DELETE);
                    deleted.push(uri.split('?').next().unwrap().to_string());
                    if uri.contains("/configmaps/") {
                        // The orphan's parent is gone already.
                        let code = if uri.contains("orphan-2") { 404 } else { 200 };
                        let mut r = reply(
                            json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": if code == 200 { "Success" } else { "Failure" }, "reason": "NotFound", "code": code}),
                        );
                        *r.status_mut() = http::StatusCode::from_u16(code).unwrap();
                        send.send_response(r);
                    } else {
                        send.send_response(reply(
                            json!({"apiVersion": "v1", "kind": "PodList", "metadata": {}, "items": []}),
                        ));
                    }
                }
            }
            deleted
        });
        let jobs = cleanup_with(&client, "training").await.unwrap();
        drop(client);
        assert_eq!(jobs, vec!["left-1".to_string(), "orphan-2".to_string()]);
        let deleted = server.await.unwrap();
        assert_eq!(
            deleted,
            vec![
                "/api/v1/namespaces/training/configmaps/left-1",
                "/api/v1/namespaces/training/pods",
                "/api/v1/namespaces/training/configmaps/orphan-2",
                "/api/v1/namespaces/training/pods",
            ]
        );
    }
}
