//! Kubernetes objects of a replay: what `topolab k8s manifests` writes and the Kubernetes
//! launcher creates, one pod per task as Kubeflow's TFJob runs a PS/worker job.
//!
//! For a job named `J` in namespace `N`:
//! - a ConfigMap `J` (the parent: the effective scenario and its layer table, mounted at
//!   [`CONFIG_DIR`]); every other object names it as its owner when the launcher creates them
//!   (static manifests carry the labels instead, since an owner reference needs the parent's
//!   UID: `kubectl delete cm J` then `kubectl delete all,secret,networkpolicy,pvc -l
//!   topolab.dev/job=J`);
//! - a Secret `J-token` with the job token, mounted read-only, never in an environment variable;
//! - per task a Pod `J-ps-0`, `J-worker-1`, ... and a headless Service of the same name, which
//!   gives it the stable DNS name `J-ps-0.N.svc.cluster.local` (workers retry with back-off
//!   until a shard's name resolves: the start-up DNS race);
//! - a NetworkPolicy admitting only the job's own pods (and DNS);
//! - checkpoints on a PersistentVolumeClaim, or on kind on a hostPath that the kind config's
//!   `extraMounts` back (kind's default storage class is ReadWriteOnce only).
//!
//! Each task's cluster spec is one environment variable ([`crate::cluster::ENV`]), as for the
//! other launchers; requests are the scenario's (a core per task, the proxy's memory).
//!
//! Through the API ([`create`], [`wait`], [`delete`]): the objects are created parent first,
//! the others with owner references to it; the job's pods are watched (one watch, no polling)
//! until every worker succeeded or a pod fails or cannot start ([`pod_failure`]: its reason and
//! message); deleting the parent in the foreground deletes everything. Tested against a fake
//! API server in-process. `topolab replay --launcher k8s` drives them through
//! [`crate::pods::Pods`], which also follows the pods' logs for their traces.

use serde_json::{Value, json};
use topolab_core::scenario::Scenario;

use crate::cluster::{ClusterSpec, ENV, Job, TOKEN_FILE_ENV, Task};
use crate::proxy::Proxy;

/// Where the effective scenario is mounted in a task's container.
pub const CONFIG_DIR: &str = "/etc/topolab";
/// Where the token Secret is mounted.
pub const SECRET_DIR: &str = "/var/run/topolab/secret";
/// Where a task writes its traces (an emptyDir: the root file system is read-only).
pub const OUT_DIR: &str = "/var/run/topolab/out";
/// Where checkpoints go.
pub const CHECKPOINT_DIR: &str = "/checkpoints";
/// The port every shard listens on.
pub const PS_PORT: u16 = 2222;
/// The non-root user the image runs as (distroless's "nonroot").
pub const USER: i64 = 65_532;
/// Label keys.
pub const JOB_LABEL: &str = "topolab.dev/job";
/// Role label key.
pub const ROLE_LABEL: &str = "topolab.dev/role";
/// Index label key.
pub const INDEX_LABEL: &str = "topolab.dev/index";

/// Where checkpoints live.
#[derive(Debug, Clone, PartialEq)]
pub enum CheckpointVolume {
    /// A PersistentVolumeClaim of this many bytes, ReadWriteMany (every shard writes).
    Claim {
        /// Requested size, bytes.
        bytes: u64,
    },
    /// A directory of the node (on kind: the kind config's `extraMounts` target).
    HostPath(String),
}

/// What the objects are made for.
#[derive(Debug, Clone, PartialEq)]
pub struct ManifestOptions {
    /// Job name (a DNS label): prefixes every object.
    pub job: String,
    /// Namespace.
    pub namespace: String,
    /// Container image with the `topolab` binary.
    pub image: String,
    /// Checkpoint storage.
    pub checkpoints: CheckpointVolume,
    /// Seconds a task waits for a peer (its name to resolve, its connection).
    pub timeout_s: u64,
    /// Real TensorFlow instead of topolab's runtime: the task program's job file
    /// ([`crate::tensorflow::job`], its trace directory [`OUT_DIR`]`/trace`); the image then
    /// needs Python with TensorFlow (Dockerfile.tensorflow), the program comes in the parent.
    pub tensorflow: Option<Value>,
}

/// Memory a TensorFlow task needs before any model: tensorflow-cpu 2.21's peak resident set
/// with its server started, measured with `ru_maxrss` on the development machine (513 MB),
/// rounded up.
pub const TF_RUNTIME_MEMORY: u64 = 520 << 20;
/// The container name a Kubeflow TFJob requires.
pub const TFJOB_CONTAINER: &str = "tensorflow";

/// Why objects could not be made.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ManifestError {
    /// A name is not a valid DNS label / image reference.
    #[error("{what} `{value}` {why}")]
    Invalid {
        /// Which input.
        what: &'static str,
        /// Its value.
        value: String,
        /// What is wrong.
        why: String,
    },
    /// The scenario cannot be replayed this way.
    #[error("{0}")]
    Refused(String),
}

/// Checks a DNS-1123 label (names of jobs and namespaces).
pub fn check_label(what: &'static str, value: &str, max: usize) -> Result<(), ManifestError> {
    let ok = !value.is_empty()
        && value.len() <= max
        && value.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !value.starts_with('-')
        && !value.ends_with('-');
    if ok {
        Ok(())
    } else {
        Err(ManifestError::Invalid {
            what,
            value: value.into(),
            why: format!(
                "is not a DNS label (lower-case letters, digits and '-', at most {max} characters, no '-' at either end)"
            ),
        })
    }
}

/// Checks an image reference (`[registry[:port]/]path[:tag][@sha256:digest]`), as the
/// distribution spec writes it.
pub fn check_image(image: &str) -> Result<(), ManifestError> {
    let bad = |why: &str| ManifestError::Invalid { what: "image", value: image.into(), why: why.into() };
    let (rest, digest) = match image.split_once('@') {
        Some((r, d)) => (r, Some(d)),
        None => (image, None),
    };
    if let Some(d) = digest {
        let hex = d.strip_prefix("sha256:").ok_or_else(|| bad("has a digest that is not sha256:<64 hex digits>"))?;
        if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()) {
            return Err(bad("has a digest that is not sha256:<64 hex digits>"));
        }
    }
    // A tag is after the last ':' that follows the last '/'.
    let slash = rest.rfind('/').map_or(0, |i| i + 1);
    let (path, tag) = match rest[slash..].rfind(':') {
        Some(i) => (&rest[..slash + i], Some(&rest[slash + i + 1..])),
        None => (rest, None),
    };
    if let Some(t) = tag {
        let ok = !t.is_empty()
            && t.len() <= 128
            && t.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.' || b == b'-')
            && !t.starts_with(['.', '-']);
        if !ok {
            return Err(bad("has an invalid tag"));
        }
    }
    let mut parts: Vec<&str> = path.split('/').collect();
    // A first component with a '.' or ':' (or "localhost") is a registry host.
    if parts.len() > 1 && (parts[0].contains(['.', ':']) || parts[0] == "localhost") {
        let host = parts.remove(0);
        if host.is_empty() || !host.bytes().all(|b| b.is_ascii_alphanumeric() || b"-.:".contains(&b)) {
            return Err(bad("has an invalid registry host"));
        }
    }
    let component_ok = |c: &str| {
        !c.is_empty()
            && c.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
            && c.starts_with(|ch: char| ch.is_ascii_lowercase() || ch.is_ascii_digit())
            && c.ends_with(|ch: char| ch.is_ascii_lowercase() || ch.is_ascii_digit())
    };
    if parts.is_empty() || !parts.iter().all(|c| component_ok(c)) {
        return Err(bad("is not a valid image reference (lower-case path components: [registry/]name[:tag])"));
    }
    Ok(())
}

fn labels(job: &str, role: Option<(&str, u32)>) -> Value {
    let mut l = json!({"app.kubernetes.io/name": "topolab", "app.kubernetes.io/managed-by": "topolab", JOB_LABEL: job});
    if let Some((r, i)) = role {
        l[ROLE_LABEL] = json!(r);
        l[INDEX_LABEL] = json!(i.to_string());
    }
    l
}

fn meta(name: &str, ns: &str, job: &str, role: Option<(&str, u32)>) -> Value {
    json!({"name": name, "namespace": ns, "labels": labels(job, role)})
}

/// Name of task `role` `index`'s pod and service.
pub fn task_name(job: &str, role: &str, index: u32) -> String {
    format!("{job}-{role}-{index}")
}

/// The objects of a replay of `eff` (the effective scenario, as written next to a run, with its
/// layer table `layers_csv`), in creation order: the parent ConfigMap first.
pub fn objects(
    eff: &Scenario,
    eff_toml: &str,
    layers_csv: &str,
    o: &ManifestOptions,
) -> Result<Vec<Value>, ManifestError> {
    check_label("job name", &o.job, 40)?;
    check_label("namespace", &o.namespace, 63)?;
    check_image(&o.image)?;
    let t = &eff.spec.topology;
    let cuda = eff.spec.runtime.backend == topolab_core::scenario::Backend::Cuda;
    let ns = &o.namespace;
    let job = &o.job;
    let proxy = Proxy::from_effective(eff);
    let params_bytes: u64 = proxy.var_sizes().iter().map(|&n| n as u64 * 4).sum();
    let mib = |b: u64| format!("{}Mi", b.div_ceil(1 << 20).max(64));
    let dns = |role: &str, i: u32| format!("{}.{ns}.svc.cluster.local", task_name(job, role, i));
    let ps_addrs: Vec<String> = (0..t.ps).map(|j| format!("{}:{PS_PORT}", dns("ps", j))).collect();
    let workers: Vec<String> = (0..t.workers).map(|i| task_name(job, "worker", i)).collect();
    let tf_workers: Vec<String> = (0..t.workers).map(|i| format!("{}:{PS_PORT}", dns("worker", i))).collect();
    let mut data = json!({"scenario.toml": eff_toml, "effective-model.csv": layers_csv});
    if let Some(j) = &o.tensorflow {
        data["tf_task.py"] = json!(crate::tensorflow::TASK_PROGRAM);
        data["tf_job.json"] = json!(j.to_string());
    }
    let mut out = vec![json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": job, "namespace": ns, "labels": labels(job, None)},
        "data": data,
    })];
    // TensorFlow's servers take no token: the NetworkPolicy is what keeps others out.
    if o.tensorflow.is_none() {
        out.push(json!({
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": format!("{job}-token"), "namespace": ns, "labels": labels(job, None)},
            "type": "Opaque",
            "stringData": {"token": "@TOKEN@"},
        }))
    };
    let checkpoint_volume = match &o.checkpoints {
        // The TensorFlow engine takes no checkpoints (refused before): no volume.
        _ if o.tensorflow.is_some() => Value::Null,
        CheckpointVolume::Claim { bytes } => {
            out.push(json!({
                "apiVersion": "v1",
                "kind": "PersistentVolumeClaim",
                "metadata": {"name": format!("{job}-checkpoints"), "namespace": ns, "labels": labels(job, None)},
                "spec": {"accessModes": ["ReadWriteMany"], "resources": {"requests": {"storage": mib(*bytes)}}},
            }));
            json!({"name": "checkpoints", "persistentVolumeClaim": {"claimName": format!("{job}-checkpoints")}})
        }
        CheckpointVolume::HostPath(p) => {
            // The node's directory itself: the kubelet would create a per-job one as root, which
            // the non-root shards could not write; they make the job's own directory.
            json!({"name": "checkpoints", "hostPath": {"path": p, "type": "DirectoryOrCreate"}})
        }
    };
    out.push(json!({
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": job, "namespace": ns, "labels": labels(job, None)},
        "spec": {
            "podSelector": {"matchLabels": {JOB_LABEL: job}},
            "policyTypes": ["Ingress", "Egress"],
            "ingress": [{"from": [{"podSelector": {"matchLabels": {JOB_LABEL: job}}}]}],
            "egress": [
                {"to": [{"podSelector": {"matchLabels": {JOB_LABEL: job}}}]},
                {"ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}]},
            ],
        },
    }));
    let tasks: Vec<(&str, u32)> = (0..t.ps).map(|j| ("ps", j)).chain((0..t.workers).map(|i| ("worker", i))).collect();
    for (role, index) in tasks {
        let name = task_name(job, role, index);
        let spec = ClusterSpec {
            ps: ps_addrs.clone(),
            worker: workers.clone(),
            task: Task { kind: role.into(), index },
            job: Job {
                token: String::new(),
                scenario: format!("{CONFIG_DIR}/scenario.toml").into(),
                out: OUT_DIR.into(),
                checkpoint_dir: format!("{CHECKPOINT_DIR}/{job}").into(),
                start_step: 0,
                bind: format!("0.0.0.0:{PS_PORT}"),
                latency_ns: eff.spec.network.latency.0,
                timeout_s: o.timeout_s,
                epoch_ns: 0,
            },
        };
        let mut memory = if role == "ps" { 3 * params_bytes } else { proxy.worker_memory() + 3 * params_bytes };
        let mut command = json!(["/usr/local/bin/topolab", "node"]);
        let mut env = vec![
            json!({"name": ENV, "value": serde_json::to_string(&spec).expect("JSON")}),
            json!({"name": TOKEN_FILE_ENV, "value": format!("{SECRET_DIR}/token")}),
            // Progress and traces in the pod's log too: its files go with it.
            json!({"name": crate::tracelog::ENV, "value": "1"}),
        ];
        // Every TensorFlow task runs a server (workers too); topolab's workers listen on nothing.
        let mut ports = if role == "ps" { json!([{"name": "ps", "containerPort": PS_PORT}]) } else { json!([]) };
        if o.tensorflow.is_some() {
            memory += TF_RUNTIME_MEMORY;
            command = json!(["python3", format!("{CONFIG_DIR}/tf_task.py")]);
            env = vec![
                json!({"name": "TF_CONFIG", "value": crate::tensorflow::tf_config(&ps_addrs, &tf_workers, role, index)}),
                json!({"name": "TOPOLAB_TF_JOB", "value": format!("{CONFIG_DIR}/tf_job.json")}),
                json!({"name": "TF_CPP_MIN_LOG_LEVEL", "value": "2"}),
                json!({"name": "HOME", "value": "/tmp"}),
                json!({"name": crate::tracelog::ENV, "value": "1"}),
            ];
            ports = json!([{"name": "tfjob-port", "containerPort": PS_PORT}]);
        }
        let mut resources = json!({
            "requests": {"cpu": "1", "memory": mib(memory)},
            "limits": {"memory": mib(memory + memory / 2)},
        });
        if cuda && role == "worker" {
            // A GPU of its own per worker (the device plugin's resource; device 0 in the pod).
            resources["limits"]["nvidia.com/gpu"] = json!("1");
        }
        let (mounts, volumes) = if o.tensorflow.is_some() {
            // Python and TensorFlow write temporary files; the root file system stays read-only.
            (
                json!([
                    {"name": "scenario", "mountPath": CONFIG_DIR, "readOnly": true},
                    {"name": "out", "mountPath": OUT_DIR},
                    {"name": "tmp", "mountPath": "/tmp"},
                ]),
                json!([
                    {"name": "scenario", "configMap": {"name": job}},
                    {"name": "out", "emptyDir": {}},
                    {"name": "tmp", "emptyDir": {}},
                ]),
            )
        } else {
            (
                json!([
                    {"name": "scenario", "mountPath": CONFIG_DIR, "readOnly": true},
                    {"name": "token", "mountPath": SECRET_DIR, "readOnly": true},
                    {"name": "out", "mountPath": OUT_DIR},
                    {"name": "checkpoints", "mountPath": CHECKPOINT_DIR},
                ]),
                json!([
                    {"name": "scenario", "configMap": {"name": job}},
                    {"name": "token", "secret": {"secretName": format!("{job}-token"), "defaultMode": 0o400}},
                    {"name": "out", "emptyDir": {}},
                    checkpoint_volume.clone(),
                ]),
            )
        };
        out.push(json!({
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": meta(&name, ns, job, Some((role, index))),
            "spec": {
                "clusterIP": "None",
                "publishNotReadyAddresses": true,
                "selector": {JOB_LABEL: job, ROLE_LABEL: role, INDEX_LABEL: index.to_string()},
                "ports": [{"name": "ps", "port": PS_PORT, "targetPort": PS_PORT}],
            },
        }));
        out.push(json!({
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": meta(&name, ns, job, Some((role, index))),
            "spec": {
                "restartPolicy": "Never",
                "automountServiceAccountToken": false,
                "securityContext": {
                    "runAsNonRoot": true,
                    "runAsUser": USER,
                    "runAsGroup": USER,
                    "fsGroup": USER,
                    "seccompProfile": {"type": "RuntimeDefault"},
                },
                "containers": [{
                    "name": "task",
                    "image": o.image,
                    "imagePullPolicy": "IfNotPresent",
                    "command": command,
                    "env": env,
                    "ports": ports,
                    "resources": resources,
                    "securityContext": {
                        "allowPrivilegeEscalation": false,
                        "readOnlyRootFilesystem": true,
                        "runAsNonRoot": true,
                        "capabilities": {"drop": ["ALL"]},
                    },
                    "volumeMounts": mounts,
                }],
                "volumes": volumes,
            },
        }));
    }
    Ok(out)
}

/// The objects of a TensorFlow replay (from [`objects`] with [`ManifestOptions::tensorflow`])
/// as a Kubeflow TFJob (`kubeflow.org/v1`, the training operator): the parent ConfigMap and
/// the NetworkPolicy as they are, and one TFJob whose PS and Worker replica templates are the
/// pods' (the operator creates the pods and their Services and sets TF_CONFIG itself, with the
/// same `NAME-ROLE-INDEX` names and port 2222). `cleanPodPolicy: All` deletes every pod when
/// the job ends, shards included; the job succeeds when every worker has.
pub fn tfjob(objects: &[Value], o: &ManifestOptions) -> Result<Vec<Value>, ManifestError> {
    if o.tensorflow.is_none() {
        return Err(ManifestError::Refused("a TFJob runs TensorFlow: use --engine tensorflow".into()));
    }
    let job = &o.job;
    let mut out: Vec<Value> =
        objects.iter().filter(|x| x["kind"] == "ConfigMap" || x["kind"] == "NetworkPolicy").cloned().collect();
    let mut replicas = serde_json::Map::new();
    for (role, key) in [("ps", "PS"), ("worker", "Worker")] {
        let pods: Vec<&Value> =
            objects.iter().filter(|x| x["kind"] == "Pod" && x["metadata"]["labels"][ROLE_LABEL] == role).collect();
        let Some(first) = pods.first() else { continue };
        let mut spec = first["spec"].clone();
        let restart = spec.as_object_mut().and_then(|m| m.remove("restartPolicy")).unwrap_or(json!("Never"));
        let c = &mut spec["containers"][0];
        c["name"] = json!(TFJOB_CONTAINER);
        if let Some(env) = c["env"].as_array_mut() {
            // The operator's TF_CONFIG names the tasks as the pods here do.
            env.retain(|e| e["name"] != "TF_CONFIG");
        }
        let mut l = labels(job, None);
        l[ROLE_LABEL] = json!(role);
        replicas.insert(
            key.into(),
            json!({
                "replicas": pods.len(),
                "restartPolicy": restart,
                "template": {"metadata": {"labels": l}, "spec": spec},
            }),
        );
    }
    out.push(json!({
        "apiVersion": "kubeflow.org/v1",
        "kind": "TFJob",
        "metadata": {"name": job, "namespace": o.namespace, "labels": labels(job, None)},
        "spec": {
            "runPolicy": {"cleanPodPolicy": "All", "backoffLimit": 0},
            "successPolicy": "AllWorkers",
            "tfReplicaSpecs": replicas,
        },
    }));
    Ok(out)
}

/// The objects as one YAML stream (documents separated by `---`), the token filled in.
pub fn to_yaml(objects: &[Value], token: &str) -> String {
    let mut s = String::new();
    for o in objects {
        let mut o = o.clone();
        if o["kind"] == "Secret" {
            o["stringData"]["token"] = json!(token);
        }
        s.push_str("---\n");
        s.push_str(&serde_yaml::to_string(&o).expect("a JSON value is YAML"));
    }
    s
}

/// Why no cluster could be used.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ClusterError {
    /// No kubeconfig (or in-cluster account) was found or it could not be read.
    #[error("no Kubernetes cluster: {detail} (tried {tried}); create one (README: kind) or point KUBECONFIG at one")]
    NoConfig {
        /// What went wrong.
        detail: String,
        /// Where it looked.
        tried: String,
    },
    /// The cluster of the context did not answer.
    #[error("the Kubernetes cluster of context `{context}` ({server}) is unreachable: {detail}")]
    Unreachable {
        /// Context used.
        context: String,
        /// API server URL.
        server: String,
        /// The error.
        detail: String,
    },
    /// The namespace does not exist.
    #[error("namespace `{0}` does not exist in the cluster (create it with kubectl create namespace {0})")]
    NoNamespace(String),
}

/// Where the client of `context` looks for its configuration, in words.
fn tried() -> String {
    format!(
        "{}, ~/.kube/config, the in-cluster service account",
        std::env::var("KUBECONFIG").map_or_else(|_| "KUBECONFIG (unset)".into(), |k| format!("KUBECONFIG={k}"))
    )
}

/// A client for the cluster of `context` (the kubeconfig's current one if `None`), and the
/// API server's URL.
pub async fn client(context: Option<&str>) -> Result<(kube::Client, String), ClusterError> {
    let options = kube::config::KubeConfigOptions { context: context.map(String::from), ..Default::default() };
    let config = match context {
        Some(_) => kube::Config::from_kubeconfig(&options).await.map_err(|e| e.to_string()),
        None => kube::Config::infer().await.map_err(|e| e.to_string()),
    }
    .map_err(|detail| ClusterError::NoConfig { detail, tried: tried() })?;
    let server = config.cluster_url.to_string();
    let client = kube::Client::try_from(config).map_err(|e| ClusterError::Unreachable {
        context: context.unwrap_or("(current)").into(),
        server: server.clone(),
        detail: e.to_string(),
    })?;
    Ok((client, server))
}

/// Connects to the cluster of `context` (the kubeconfig's current one if `None`) and checks
/// that `namespace` exists: the API server's version.
pub fn connect(context: Option<&str>, namespace: &str) -> Result<String, ClusterError> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| ClusterError::NoConfig { detail: e.to_string(), tried: "nothing (no async runtime)".into() })?;
    rt.block_on(async {
        let (client, server) = client(context).await?;
        let context = context.unwrap_or("(current)").to_string();
        let unreachable =
            |detail: String| ClusterError::Unreachable { context: context.clone(), server: server.clone(), detail };
        let version = client.apiserver_version().await.map_err(|e| unreachable(e.to_string()))?;
        let namespaces: kube::Api<k8s_openapi::api::core::v1::Namespace> = kube::Api::all(client);
        match namespaces.get_opt(namespace).await.map_err(|e| unreachable(e.to_string()))? {
            Some(_) => Ok(format!("{}.{}", version.major, version.minor)),
            None => Err(ClusterError::NoNamespace(namespace.into())),
        }
    })
}

/// A scenario name as a DNS label (at most 40 characters), for job names.
pub fn dns_label(name: &str) -> String {
    let mut s: String =
        name.to_ascii_lowercase().chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '-' }).collect();
    s.truncate(40);
    let s = s.trim_matches('-').to_string();
    if s.is_empty() { "job".into() } else { s }
}

/// Why a Kubernetes request or a job failed.
#[derive(Debug, thiserror::Error)]
pub enum K8sError {
    /// The API server refused or failed a request.
    #[error("{what}: {source}")]
    Api {
        /// What was being done.
        what: String,
        /// The client's error.
        source: kube::Error,
    },
    /// An object of a kind this launcher does not create.
    #[error("cannot create a {0}")]
    Kind(String),
    /// An object did not match its Kubernetes type.
    #[error("{kind} {name}: {detail}")]
    Object {
        /// Kind.
        kind: String,
        /// Name.
        name: String,
        /// What is wrong.
        detail: String,
    },
}

/// How a job's pods ended.
#[derive(Debug, Clone, PartialEq)]
pub enum JobOutcome {
    /// Every worker pod succeeded.
    Succeeded,
    /// A pod failed or cannot start: the pod, its reason (OOMKilled, ErrImagePull,
    /// Unschedulable, ...) and the message Kubernetes gave.
    Failed {
        /// Pod name.
        pod: String,
        /// Kubernetes' reason.
        reason: String,
        /// Kubernetes' message.
        message: String,
    },
}

fn api_error(what: String) -> impl FnOnce(kube::Error) -> K8sError {
    move |source| K8sError::Api { what, source }
}

async fn create_typed<K>(client: &kube::Client, ns: &str, object: Value) -> Result<K, K8sError>
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + serde::de::DeserializeOwned
        + serde::Serialize
        + std::fmt::Debug,
    K::DynamicType: Default,
{
    let kind = object["kind"].as_str().unwrap_or("?").to_string();
    let name = object["metadata"]["name"].as_str().unwrap_or("?").to_string();
    let typed: K = serde_json::from_value(object).map_err(|e| K8sError::Object {
        kind: kind.clone(),
        name: name.clone(),
        detail: e.to_string(),
    })?;
    kube::Api::<K>::namespaced(client.clone(), ns)
        .create(&kube::api::PostParams::default(), &typed)
        .await
        .map_err(api_error(format!("creating {kind} {name}")))
}

/// Creates `objects` (from [`objects`], the parent first) in namespace `ns`: every other object
/// gets an owner reference to the parent, so that deleting it deletes everything.
pub async fn create(client: &kube::Client, ns: &str, objects: &[Value]) -> Result<(), K8sError> {
    use k8s_openapi::api::core::v1::{ConfigMap, PersistentVolumeClaim, Pod, Secret, Service};
    use k8s_openapi::api::networking::v1::NetworkPolicy;
    let Some((parent, rest)) = objects.split_first() else { return Ok(()) };
    let parent: ConfigMap = create_typed(client, ns, parent.clone()).await?;
    let owner = json!([{
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "name": parent.metadata.name,
        "uid": parent.metadata.uid,
        "controller": true,
        "blockOwnerDeletion": true,
    }]);
    for o in rest {
        let mut o = o.clone();
        o["metadata"]["ownerReferences"] = owner.clone();
        match o["kind"].as_str().unwrap_or("") {
            "Secret" => drop(create_typed::<Secret>(client, ns, o).await?),
            "PersistentVolumeClaim" => drop(create_typed::<PersistentVolumeClaim>(client, ns, o).await?),
            "NetworkPolicy" => drop(create_typed::<NetworkPolicy>(client, ns, o).await?),
            "Service" => drop(create_typed::<Service>(client, ns, o).await?),
            "Pod" => drop(create_typed::<Pod>(client, ns, o).await?),
            other => return Err(K8sError::Kind(other.into())),
        }
    }
    Ok(())
}

/// Why `pod` cannot finish, if it cannot: failed (its container's termination reason), stuck
/// pulling its image, crash-looping, or unschedulable.
pub fn pod_failure(pod: &k8s_openapi::api::core::v1::Pod) -> Option<(String, String)> {
    let status = pod.status.as_ref()?;
    for c in status.container_statuses.iter().flatten() {
        let state = c.state.as_ref();
        if let Some(t) = state.and_then(|s| s.terminated.as_ref())
            && t.exit_code != 0
        {
            return Some((
                t.reason.clone().unwrap_or_else(|| "Error".into()),
                t.message.clone().unwrap_or_else(|| format!("exit code {}", t.exit_code)),
            ));
        }
        if let Some(w) = state.and_then(|s| s.waiting.as_ref())
            && let Some(r) = &w.reason
            && [
                "ErrImagePull",
                "ImagePullBackOff",
                "InvalidImageName",
                "CrashLoopBackOff",
                "CreateContainerConfigError",
            ]
            .contains(&r.as_str())
        {
            return Some((r.clone(), w.message.clone().unwrap_or_default()));
        }
    }
    for c in status.conditions.iter().flatten() {
        if c.type_ == "PodScheduled" && c.status == "False" && c.reason.as_deref() == Some("Unschedulable") {
            return Some(("Unschedulable".into(), c.message.clone().unwrap_or_default()));
        }
    }
    (status.phase.as_deref() == Some("Failed"))
        .then(|| (status.reason.clone().unwrap_or_else(|| "Failed".into()), status.message.clone().unwrap_or_default()))
}

/// Watches job `job`'s pods (a watch, not polling) until its `workers` worker pods succeeded,
/// or one pod fails or cannot start.
pub async fn wait(client: &kube::Client, ns: &str, job: &str, workers: usize) -> Result<JobOutcome, K8sError> {
    use futures::{StreamExt, TryStreamExt};
    use k8s_openapi::api::core::v1::Pod;
    let api = kube::Api::<Pod>::namespaced(client.clone(), ns);
    let params = kube::api::WatchParams::default().labels(&format!("{JOB_LABEL}={job}"));
    let mut stream = api.watch(&params, "0").await.map_err(api_error(format!("watching the pods of {job}")))?.boxed();
    let mut succeeded = std::collections::BTreeSet::new();
    while let Some(event) = stream.try_next().await.map_err(api_error(format!("watching the pods of {job}")))? {
        let pod = match event {
            kube::api::WatchEvent::Added(p) | kube::api::WatchEvent::Modified(p) => p,
            _ => continue,
        };
        let name = pod.metadata.name.clone().unwrap_or_default();
        if let Some((reason, message)) = pod_failure(&pod) {
            return Ok(JobOutcome::Failed { pod: name, reason, message });
        }
        let role = pod.metadata.labels.as_ref().and_then(|l| l.get(ROLE_LABEL)).cloned().unwrap_or_default();
        if role == "worker" && pod.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Succeeded") {
            succeeded.insert(name);
            if succeeded.len() == workers {
                return Ok(JobOutcome::Succeeded);
            }
        }
    }
    Err(K8sError::Object {
        kind: "watch".into(),
        name: job.into(),
        detail: "the watch ended before the job did".into(),
    })
}

/// Deletes job `job`: the parent in the foreground (its dependents go first), then whatever
/// still carries the job's label (pods of a job whose parent was already gone).
pub async fn delete(client: &kube::Client, ns: &str, job: &str) -> Result<(), K8sError> {
    use k8s_openapi::api::core::v1::{ConfigMap, Pod};
    let parents = kube::Api::<ConfigMap>::namespaced(client.clone(), ns);
    match parents.delete(job, &kube::api::DeleteParams::foreground()).await {
        Ok(_) => {}
        Err(kube::Error::Api(s)) if s.code == 404 => {}
        Err(e) => return Err(api_error(format!("deleting {job}"))(e)),
    }
    let pods = kube::Api::<Pod>::namespaced(client.clone(), ns);
    pods.delete_collection(
        &kube::api::DeleteParams::default(),
        &kube::api::ListParams::default().labels(&format!("{JOB_LABEL}={job}")),
    )
    .await
    .map_err(api_error(format!("deleting the pods of {job}")))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    //! The launcher's request sequence against a fake API server in-process (kube-rs's own
    //! tower mock pattern): create with owner references, a watch whose events end the job,
    //! a pod that fails with its reason, and deletion.
    use super::*;
    use http::{Method, Request, Response};
    use kube::client::Body;

    type Handle = tower_test::mock::Handle<Request<Body>, Response<Body>>;

    fn fake() -> (kube::Client, Handle) {
        let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        (kube::Client::new(service, "training"), handle)
    }

    fn scenario() -> (Scenario, String, String) {
        let s = Scenario::parse(
            "name = \"fake\"\nbatch = 8\n[model]\nname = \"alexnet\"\n[topology]\nworkers = 2\nps = 1\n[runtime]\nscale = { params = 0.001, flops = 0.0001 }\n",
            "fake.toml",
            "fake",
            None,
        )
        .unwrap();
        (s, "name = \"fake\"\n".into(), "layer,kind\n".into())
    }

    fn options() -> ManifestOptions {
        ManifestOptions {
            job: "fake".into(),
            namespace: "training".into(),
            image: "topolab:test".into(),
            checkpoints: CheckpointVolume::HostPath("/var/lib/topolab/checkpoints".into()),
            timeout_s: 60,
            tensorflow: None,
        }
    }

    /// Answers the next request, which must be `method` on a path containing `path`, with
    /// `reply(body)`; returns the request's JSON body.
    async fn expect(h: &mut Handle, method: Method, path: &str, reply: impl FnOnce(&Value) -> Vec<u8>) -> Value {
        let (req, send) = h.next_request().await.expect("a request");
        assert_eq!(req.method(), method, "{}", req.uri());
        assert!(req.uri().to_string().contains(path), "{} does not contain {path}", req.uri());
        let bytes = req.into_body().collect_bytes().await.unwrap();
        let body: Value = if bytes.is_empty() { Value::Null } else { serde_json::from_slice(&bytes).unwrap() };
        send.send_response(Response::new(Body::from(reply(&body))));
        body
    }

    fn pod_event(kind: &str, name: &str, role: &str, status: Value) -> Value {
        json!({"type": kind, "object": {
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": "training", "labels": {JOB_LABEL: "fake", ROLE_LABEL: role}},
            "status": status,
        }})
    }

    async fn serve_create(h: &mut Handle, objects: &[Value]) {
        // The parent first; the server gives it a UID that every other object must own.
        let plural = |kind: &str| match kind {
            "NetworkPolicy" => "networkpolicies".to_string(),
            "PersistentVolumeClaim" => "persistentvolumeclaims".to_string(),
            k => format!("{}s", k.to_lowercase()),
        };
        let body = expect(h, Method::POST, "/api/v1/namespaces/training/configmaps", |b| {
            let mut b = b.clone();
            b["metadata"]["uid"] = json!("uid-parent");
            serde_json::to_vec(&b).unwrap()
        })
        .await;
        assert_eq!(body["metadata"]["name"], "fake");
        for o in &objects[1..] {
            let kind = o["kind"].as_str().unwrap();
            let body = expect(h, Method::POST, &format!("/namespaces/training/{}", plural(kind)), |b| {
                serde_json::to_vec(b).unwrap()
            })
            .await;
            assert_eq!(body["kind"], kind);
            assert_eq!(body["metadata"]["ownerReferences"][0]["uid"], "uid-parent", "{kind} is owned by the parent");
            assert_eq!(body["metadata"]["ownerReferences"][0]["kind"], "ConfigMap");
        }
    }

    async fn serve_delete(h: &mut Handle) {
        let body = expect(h, Method::DELETE, "/api/v1/namespaces/training/configmaps/fake", |_| {
            serde_json::to_vec(&json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "fake"}})).unwrap()
        })
        .await;
        assert_eq!(body["propagationPolicy"], "Foreground", "dependents go with the parent");
        expect(h, Method::DELETE, "/api/v1/namespaces/training/pods?", |_| {
            serde_json::to_vec(&json!({"apiVersion": "v1", "kind": "PodList", "metadata": {}, "items": []})).unwrap()
        })
        .await;
    }

    /// Runs the launcher's create, wait and delete against the fake server, which answers the
    /// watch with `events` (and checks the watch's selector); the job's outcome.
    async fn run_job(events: Vec<Value>) -> JobOutcome {
        let (s, toml, csv) = scenario();
        let objects = objects(&s, &toml, &csv, &options()).unwrap();
        let (client, mut h) = fake();
        let server_objects = objects.clone();
        let server = tokio::spawn(async move {
            serve_create(&mut h, &server_objects).await;
            let (req, send) = h.next_request().await.unwrap();
            let uri = req.uri().to_string();
            assert!(uri.contains("watch=true") && uri.contains("labelSelector=topolab.dev%2Fjob%3Dfake"), "{uri}");
            let lines: String = events.iter().map(|e| format!("{e}\n")).collect();
            send.send_response(Response::new(Body::from(lines.into_bytes())));
            serve_delete(&mut h).await;
        });
        create(&client, "training", &objects).await.unwrap();
        let outcome = wait(&client, "training", "fake", 2).await.unwrap();
        delete(&client, "training", "fake").await.unwrap();
        tokio::time::timeout(std::time::Duration::from_secs(5), server).await.unwrap().unwrap();
        outcome
    }

    #[tokio::test]
    async fn a_job_is_created_owned_by_its_parent_watched_to_the_end_and_deleted() {
        // The shard runs, then both workers succeed (one reported twice).
        let outcome = run_job(vec![
            pod_event("ADDED", "fake-ps-0", "ps", json!({"phase": "Running"})),
            pod_event("MODIFIED", "fake-worker-0", "worker", json!({"phase": "Succeeded"})),
            pod_event("MODIFIED", "fake-worker-0", "worker", json!({"phase": "Succeeded"})),
            pod_event("MODIFIED", "fake-worker-1", "worker", json!({"phase": "Succeeded"})),
        ])
        .await;
        assert_eq!(outcome, JobOutcome::Succeeded);
    }

    #[tokio::test]
    async fn a_pod_that_fails_fails_the_job_with_its_reason_and_everything_is_deleted() {
        let killed = json!({"phase": "Running", "containerStatuses": [{
            "name": "task", "image": "topolab:test", "imageID": "", "ready": false, "restartCount": 0,
            "state": {"terminated": {"exitCode": 137, "reason": "OOMKilled", "message": "memory limit 96Mi"}},
        }]});
        let outcome = run_job(vec![
            pod_event("ADDED", "fake-worker-1", "worker", json!({"phase": "Pending"})),
            pod_event("MODIFIED", "fake-worker-1", "worker", killed),
        ])
        .await;
        assert_eq!(
            outcome,
            JobOutcome::Failed {
                pod: "fake-worker-1".into(),
                reason: "OOMKilled".into(),
                message: "memory limit 96Mi".into()
            }
        );
    }

    #[test]
    fn pods_that_cannot_start_say_why() {
        let pod = |status: Value| -> k8s_openapi::api::core::v1::Pod {
            serde_json::from_value(json!({"metadata": {"name": "p"}, "status": status})).unwrap()
        };
        let pull = pod(json!({"phase": "Pending", "containerStatuses": [{"name": "task", "image": "x", "imageID": "",
            "ready": false, "restartCount": 0,
            "state": {"waiting": {"reason": "ErrImagePull", "message": "pull access denied for x"}}}]}));
        assert_eq!(pod_failure(&pull), Some(("ErrImagePull".into(), "pull access denied for x".into())));
        let unschedulable = pod(json!({"phase": "Pending", "conditions": [{"type": "PodScheduled", "status": "False",
            "reason": "Unschedulable", "message": "0/3 nodes are available: 3 Insufficient memory."}]}));
        assert_eq!(pod_failure(&unschedulable).unwrap().0, "Unschedulable");
        assert_eq!(pod_failure(&pod(json!({"phase": "Running"}))), None);
    }
}
