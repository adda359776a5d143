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
}

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
    if eff.spec.runtime.backend == topolab_core::scenario::Backend::Cuda {
        // Requests say nvidia.com/gpu, but a GPU node pool is the user's; refused until tested.
        return Err(ManifestError::Refused(
            "runtime.backend = \"cuda\" on Kubernetes is not built yet (the pods would need nvidia.com/gpu and a CUDA image)".into(),
        ));
    }
    let ns = &o.namespace;
    let job = &o.job;
    let proxy = Proxy::from_effective(eff);
    let params_bytes: u64 = proxy.var_sizes().iter().map(|&n| n as u64 * 4).sum();
    let mib = |b: u64| format!("{}Mi", b.div_ceil(1 << 20).max(64));
    let dns = |role: &str, i: u32| format!("{}.{ns}.svc.cluster.local", task_name(job, role, i));
    let ps_addrs: Vec<String> = (0..t.ps).map(|j| format!("{}:{PS_PORT}", dns("ps", j))).collect();
    let workers: Vec<String> = (0..t.workers).map(|i| task_name(job, "worker", i)).collect();
    let mut out = vec![json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": job, "namespace": ns, "labels": labels(job, None)},
        "data": {"scenario.toml": eff_toml, "effective-model.csv": layers_csv},
    })];
    out.push(json!({
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": format!("{job}-token"), "namespace": ns, "labels": labels(job, None)},
        "type": "Opaque",
        "stringData": {"token": "@TOKEN@"},
    }));
    let checkpoint_volume = match &o.checkpoints {
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
            json!({"name": "checkpoints", "hostPath": {"path": format!("{p}/{job}"), "type": "DirectoryOrCreate"}})
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
                checkpoint_dir: CHECKPOINT_DIR.into(),
                start_step: 0,
                bind: format!("0.0.0.0:{PS_PORT}"),
                latency_ns: eff.spec.network.latency.0,
                timeout_s: o.timeout_s,
                epoch_ns: 0,
            },
        };
        let memory = if role == "ps" { 3 * params_bytes } else { proxy.worker_memory() + 3 * params_bytes };
        let ports = if role == "ps" { json!([{"name": "ps", "containerPort": PS_PORT}]) } else { json!([]) };
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
                    "command": ["/usr/local/bin/topolab", "node"],
                    "env": [
                        {"name": ENV, "value": serde_json::to_string(&spec).expect("JSON")},
                        {"name": TOKEN_FILE_ENV, "value": format!("{SECRET_DIR}/token")},
                    ],
                    "ports": ports,
                    "resources": {
                        "requests": {"cpu": "1", "memory": mib(memory)},
                        "limits": {"memory": mib(memory + memory / 2)},
                    },
                    "securityContext": {
                        "allowPrivilegeEscalation": false,
                        "readOnlyRootFilesystem": true,
                        "runAsNonRoot": true,
                        "capabilities": {"drop": ["ALL"]},
                    },
                    "volumeMounts": [
                        {"name": "scenario", "mountPath": CONFIG_DIR, "readOnly": true},
                        {"name": "token", "mountPath": SECRET_DIR, "readOnly": true},
                        {"name": "out", "mountPath": OUT_DIR},
                        {"name": "checkpoints", "mountPath": CHECKPOINT_DIR},
                    ],
                }],
                "volumes": [
                    {"name": "scenario", "configMap": {"name": job}},
                    {"name": "token", "secret": {"secretName": format!("{job}-token"), "defaultMode": 0o400}},
                    {"name": "out", "emptyDir": {}},
                    checkpoint_volume.clone(),
                ],
            },
        }));
    }
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

/// Connects to the cluster of `context` (the kubeconfig's current one if `None`) and checks
/// that `namespace` exists: the API server's version.
pub fn connect(context: Option<&str>, namespace: &str) -> Result<String, ClusterError> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| ClusterError::NoConfig { detail: e.to_string(), tried: "nothing (no async runtime)".into() })?;
    rt.block_on(async {
        let tried = format!(
            "{}, ~/.kube/config, the in-cluster service account",
            std::env::var("KUBECONFIG").map_or_else(|_| "KUBECONFIG (unset)".into(), |k| format!("KUBECONFIG={k}"))
        );
        let options = kube::config::KubeConfigOptions { context: context.map(String::from), ..Default::default() };
        let config = match context {
            Some(_) => kube::Config::from_kubeconfig(&options).await.map_err(|e| e.to_string()),
            None => kube::Config::infer().await.map_err(|e| e.to_string()),
        }
        .map_err(|detail| ClusterError::NoConfig { detail, tried: tried.clone() })?;
        let server = config.cluster_url.to_string();
        let context = context.unwrap_or("(current)").to_string();
        let unreachable =
            |detail: String| ClusterError::Unreachable { context: context.clone(), server: server.clone(), detail };
        let client = kube::Client::try_from(config).map_err(|e| unreachable(e.to_string()))?;
        let version = client.apiserver_version().await.map_err(|e| unreachable(e.to_string()))?;
        let namespaces: kube::Api<k8s_openapi::api::core::v1::Namespace> = kube::Api::all(client);
        match namespaces.get_opt(namespace).await.map_err(|e| unreachable(e.to_string()))? {
            Some(_) => Ok(format!("{}.{}", version.major, version.minor)),
            None => Err(ClusterError::NoNamespace(namespace.into())),
        }
    })
}
