//! The Kubernetes objects of a replay: manifests, their offline schema validation, the image's
//! Dockerfile, and the clear error without a cluster.

use std::process::Command;

use super::{root, stderr, stdout, topolab};

fn tmp(name: &str) -> super::TempDir {
    super::TempDir::new(&format!("k8s-{name}"))
}

/// The YAML documents of a job.yaml.
fn documents(path: &std::path::Path) -> Vec<serde_json::Value> {
    let text = std::fs::read_to_string(path).unwrap();
    serde_yaml::Deserializer::from_str(&text)
        .map(|d| serde::Deserialize::deserialize(d).unwrap())
        .collect::<Vec<serde_json::Value>>()
}

fn manifests(dir: &std::path::Path, extra: &[&str]) -> std::process::Output {
    let mut args =
        vec!["k8s", "manifests", "scenarios/examples/tiny-mlp-custom-gpu.toml", "--out", dir.to_str().unwrap()];
    args.extend_from_slice(extra);
    topolab(&args)
}

#[test]
fn manifests_have_a_pod_and_a_headless_service_per_task_and_lock_the_pods_down() {
    let d = tmp("manifests");
    let o =
        manifests(&d.join("out"), &["--namespace", "training", "--image", "registry.example:5000/ml/topolab:0.1.0"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("4 pods and 4 headless services for 2 PS and 2 workers"), "{}", stdout(&o));
    let docs = documents(&d.join("out/job.yaml"));
    let kinds: Vec<&str> = docs.iter().map(|o| o["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds[0], "ConfigMap", "the parent comes first");
    for (kind, n) in [("Pod", 4), ("Service", 4), ("Secret", 1), ("NetworkPolicy", 1), ("PersistentVolumeClaim", 1)] {
        assert_eq!(kinds.iter().filter(|k| **k == kind).count(), n, "{kind}: {kinds:?}");
    }
    let job = "tiny-mlp-custom-gpu";
    for o in &docs {
        assert_eq!(o["metadata"]["namespace"], "training");
        assert_eq!(o["metadata"]["labels"]["topolab.dev/job"], job, "every object is found by label");
    }
    // The parent holds the effective scenario the tasks run.
    let cm = &docs[0];
    assert!(cm["data"]["scenario.toml"].as_str().unwrap().contains("effective-model.csv"));
    assert!(cm["data"]["effective-model.csv"].as_str().unwrap().starts_with("layer,kind"));
    let token =
        docs.iter().find(|o| o["kind"] == "Secret").unwrap()["stringData"]["token"].as_str().unwrap().to_string();
    assert_eq!(token.len(), 64, "a fresh 32-byte token");
    for pod in docs.iter().filter(|o| o["kind"] == "Pod") {
        let spec = &pod["spec"];
        assert_eq!(spec["securityContext"]["runAsNonRoot"], true);
        let c = &spec["containers"][0];
        assert_eq!(c["image"], "registry.example:5000/ml/topolab:0.1.0");
        assert_eq!(c["securityContext"]["readOnlyRootFilesystem"], true);
        assert_eq!(c["securityContext"]["allowPrivilegeEscalation"], false);
        assert_eq!(c["securityContext"]["capabilities"]["drop"], serde_json::json!(["ALL"]));
        assert!(c["resources"]["requests"]["memory"].as_str().unwrap().ends_with("Mi"));
        // The cluster spec in one variable, with the shards' DNS names; the token only in
        // the mounted Secret.
        let env = c["env"].as_array().unwrap();
        let spec_json = env.iter().find(|e| e["name"] == "TOPOLAB_CLUSTER").unwrap()["value"].as_str().unwrap();
        let cs: topolab_runtime::cluster::ClusterSpec = serde_json::from_str(spec_json).unwrap();
        assert_eq!(
            cs.ps,
            vec![
                format!("{job}-ps-0.training.svc.cluster.local:2222"),
                format!("{job}-ps-1.training.svc.cluster.local:2222")
            ]
        );
        assert!(cs.job.token.is_empty() && !serde_json::to_string(env).unwrap().contains(&token));
        assert_eq!(pod["metadata"]["name"], format!("{job}-{}-{}", cs.task.kind, cs.task.index));
        // Typed objects: the fields are Kubernetes' own.
        let typed: k8s_openapi::api::core::v1::Pod = serde_json::from_value(pod.clone()).unwrap();
        assert_eq!(typed.spec.unwrap().restart_policy.as_deref(), Some("Never"));
    }
    for svc in docs.iter().filter(|o| o["kind"] == "Service") {
        assert_eq!(svc["spec"]["clusterIP"], "None", "headless");
        let _: k8s_openapi::api::core::v1::Service = serde_json::from_value(svc.clone()).unwrap();
    }
    let np = docs.iter().find(|o| o["kind"] == "NetworkPolicy").unwrap();
    assert_eq!(np["spec"]["ingress"][0]["from"][0]["podSelector"]["matchLabels"]["topolab.dev/job"], job);
    // On kind: a hostPath under the nodes' extraMounts instead of a claim.
    let o = manifests(&d.join("kind"), &["--kind"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let docs = documents(&d.join("kind/job.yaml"));
    assert!(docs.iter().all(|o| o["kind"] != "PersistentVolumeClaim"));
    let kind_cfg = std::fs::read_to_string(root().join("kind/cluster.yaml")).unwrap();
    let pod = docs.iter().find(|o| o["kind"] == "Pod").unwrap();
    let host = pod["spec"]["volumes"].as_array().unwrap().iter().find(|v| v["name"] == "checkpoints").unwrap();
    let path = host["hostPath"]["path"].as_str().unwrap();
    assert!(kind_cfg.contains("containerPath: /var/lib/topolab/checkpoints") && path == "/var/lib/topolab/checkpoints");
    // The shards write the job's own directory in it (as their user, not the kubelet's root).
    let env = pod["spec"]["containers"][0]["env"].as_array().unwrap();
    let spec = env.iter().find(|e| e["name"] == "TOPOLAB_CLUSTER").unwrap()["value"].as_str().unwrap();
    let cs: topolab_runtime::cluster::ClusterSpec = serde_json::from_str(spec).unwrap();
    assert_eq!(cs.job.checkpoint_dir, std::path::PathBuf::from("/checkpoints/tiny-mlp-custom-gpu"));
}

#[test]
fn bad_names_and_images_are_refused_before_anything_is_written() {
    let d = tmp("bad");
    for (args, want) in [
        (vec!["--namespace", "Training"], "--namespace"),
        (vec!["--image", "Topolab:latest"], "--image"),
        (vec!["--image", "topolab:bad tag"], "--image"),
        (vec!["--job", "Bad_Job"], "--job"),
    ] {
        let out = d.join("out");
        let o = manifests(&out, &args);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", stderr(&o));
        assert!(stderr(&o).contains(want), "{args:?}: {}", stderr(&o));
        assert!(!out.exists(), "{args:?}: nothing written");
    }
}

#[test]
fn a_kubernetes_replay_without_a_cluster_exits_2_naming_what_was_tried() {
    let d = tmp("no-cluster");
    let run = d.join("run");
    let kubeconfig = d.join("no-such-kubeconfig");
    let o = super::topolab_env(
        &["replay", "scenarios/examples/tiny-mlp-custom-gpu.toml", "--launcher", "k8s", "--out", run.to_str().unwrap()],
        &[
            ("KUBECONFIG", Some(kubeconfig.as_os_str())),
            ("HOME", Some(d.as_os_str())),
            ("KUBERNETES_SERVICE_HOST", None),
        ],
    );
    let e = super::bad_input_line(&o);
    assert!(e.contains("no Kubernetes cluster") && e.contains("KUBECONFIG="), "{e}");
    assert!(!d.join("run").exists(), "nothing created");
}

/// A kubeconfig whose one cluster is a closed port on loopback.
fn unreachable_kubeconfig(d: &std::path::Path) -> std::path::PathBuf {
    let p = d.join("kubeconfig");
    std::fs::create_dir_all(d).unwrap();
    std::fs::write(
        &p,
        "apiVersion: v1\nkind: Config\nclusters:\n- name: gone\n  cluster:\n    server: https://127.0.0.1:1\ncontexts:\n- name: gone\n  context:\n    cluster: gone\n    user: u\ncurrent-context: gone\nusers:\n- name: u\n  user:\n    token: t\n",
    )
    .unwrap();
    p
}

#[test]
fn an_unreachable_cluster_is_one_line_naming_the_context_for_replay_and_cleanup() {
    let d = tmp("unreachable");
    let kubeconfig = unreachable_kubeconfig(&d);
    let run = d.join("run");
    let env = [("KUBECONFIG", Some(kubeconfig.as_os_str())), ("KUBERNETES_SERVICE_HOST", None)];
    let replay = [
        "replay",
        "scenarios/examples/tiny-mlp-custom-gpu.toml",
        "--launcher",
        "k8s",
        "--context",
        "gone",
        "--out",
        run.to_str().unwrap(),
    ];
    let cleanup = ["replay", "--cleanup", "--launcher", "k8s", "--context", "gone"];
    for args in [&replay[..], &cleanup[..]] {
        let o = super::topolab_env(args, &env);
        let e = super::bad_input_line(&o);
        assert!(e.contains("context `gone`") && e.contains("https://127.0.0.1:1") && e.contains("unreachable"), "{e}");
    }
    assert!(!run.exists(), "nothing created");
}

#[test]
fn on_a_real_cluster_a_replay_trains_brings_its_traces_back_and_leaves_nothing_behind() {
    // Runs where a kubeconfig points at a reachable cluster with the image loaded (README:
    // kind); TOPOLAB_IMAGE names the image (default topolab:latest), TOPOLAB_NAMESPACE the
    // namespace (default), TOPOLAB_KIND=1 puts checkpoints on kind's extraMounts.
    let ns = std::env::var("TOPOLAB_NAMESPACE").unwrap_or_else(|_| "default".into());
    if let Err(e) = topolab_runtime::k8s::connect(None, &ns) {
        eprintln!("skipped: no reachable Kubernetes cluster ({e})");
        return;
    }
    let image = std::env::var("TOPOLAB_IMAGE").unwrap_or_else(|_| "topolab:latest".into());
    let d = tmp("real-cluster");
    let run = d.join("run");
    let mut args = vec![
        "replay",
        "scenarios/examples/tiny-mlp-custom-gpu.toml",
        "--launcher",
        "k8s",
        "--namespace",
        &ns,
        "--image",
        &image,
        "--timeout",
        "300",
        "--format",
        "json",
        "--out",
        run.to_str().unwrap(),
    ];
    if std::env::var_os("TOPOLAB_KIND").is_some() {
        args.push("--kind");
    }
    let o = topolab(&args);
    assert!(o.status.success(), "{}", stderr(&o));
    let summary: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(summary["replay"]["launcher"], "k8s");
    let s =
        topolab_core::scenario::Scenario::load(&root().join("scenarios/examples/tiny-mlp-custom-gpu.toml")).unwrap();
    let rows = std::fs::read_to_string(run.join("steps.csv")).unwrap().lines().count() - 1;
    assert_eq!(rows as u64, u64::from(s.spec.topology.workers) * s.spec.training.steps);
    // Nothing of the job is left: no pod, no parent.
    let job = stderr(&o).lines().find_map(|l| l.strip_prefix("job ")?.split(' ').next().map(String::from)).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let left = rt.block_on(async {
        let (client, _) = topolab_runtime::k8s::client(None).await.unwrap();
        let pods: kube::Api<k8s_openapi::api::core::v1::Pod> = kube::Api::namespaced(client, &ns);
        pods.list(&kube::api::ListParams::default().labels(&format!("topolab.dev/job={job}")))
            .await
            .unwrap()
            .items
            .len()
    });
    assert_eq!(left, 0, "pods of {job} left behind");
}

#[test]
fn the_tensorflow_image_installs_the_engines_version_and_runs_as_the_same_non_root_user() {
    let text = std::fs::read_to_string(root().join("Dockerfile.tensorflow")).unwrap();
    let setup = std::fs::read_to_string(root().join("scripts/setup-tensorflow.sh")).unwrap();
    let version = setup.lines().find_map(|l| l.strip_prefix("VERSION=${TENSORFLOW_VERSION:-")).unwrap();
    let version = version.trim_end_matches('}');
    assert!(text.contains(&format!("ARG TENSORFLOW_VERSION={version}")), "the image pins tensorflow-cpu {version}");
    assert!(text.contains("\"tensorflow-cpu==${TENSORFLOW_VERSION}\""));
    let user = text.lines().rev().find(|l| l.starts_with("USER ")).expect("a USER");
    let uid = user.trim_start_matches("USER ").split(':').next().unwrap();
    assert_eq!(uid.parse::<i64>().ok(), Some(topolab_runtime::k8s::USER), "{user}");
    // The pods run python3 from the PATH.
    assert!(text.lines().any(|l| l.starts_with("FROM python:3")), "{text}");
}

#[test]
fn the_dockerfile_builds_in_one_stage_and_runs_the_binary_as_a_non_root_user_in_another() {
    let text = std::fs::read_to_string(root().join("Dockerfile")).unwrap();
    let lines: Vec<&str> = text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')).collect();
    let stages: Vec<usize> = lines.iter().enumerate().filter(|(_, l)| l.starts_with("FROM ")).map(|(i, _)| i).collect();
    assert_eq!(stages.len(), 2, "a build stage and a runtime stage: {lines:?}");
    let build = &lines[stages[0]..stages[1]];
    let run = &lines[stages[1]..];
    assert!(build[0].ends_with(" AS build"), "{}", build[0]);
    assert!(build.iter().any(|l| l.starts_with("RUN cargo build --release")), "{build:?}");
    assert!(
        run.iter().any(|l| l.starts_with("COPY --from=build ") && l.ends_with(" /usr/local/bin/topolab")),
        "{run:?}"
    );
    // The manifests run /usr/local/bin/topolab as this user.
    let user = run.iter().rev().find(|l| l.starts_with("USER ")).expect("a USER in the runtime stage");
    let uid = user.trim_start_matches("USER ").split(':').next().unwrap();
    assert_eq!(uid.parse::<i64>().ok(), Some(topolab_runtime::k8s::USER), "{user}");
    assert!(!run.iter().any(|l| l.starts_with("RUN cargo")), "no toolchain in the runtime image");
    let ignore = std::fs::read_to_string(root().join(".dockerignore")).unwrap();
    assert!(ignore.lines().any(|l| l.trim() == "target"));
}

fn tf_manifests(dir: &std::path::Path, extra: &[&str]) -> std::process::Output {
    let mut args = vec![
        "k8s",
        "manifests",
        "scenarios/examples/tiny-mlp-tensorflow.toml",
        "--engine",
        "tensorflow",
        "--out",
        dir.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    topolab(&args)
}

#[test]
fn tensorflow_pods_run_the_task_program_with_tf_config_naming_every_task_by_its_service() {
    let d = tmp("tf-pods");
    let o = tf_manifests(&d, &["--namespace", "training", "--job", "tfj"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let docs = documents(&d.join("job.yaml"));
    assert!(!docs.iter().any(|x| x["kind"] == "Secret"), "TensorFlow's servers take no token");
    let config = &docs[0]["data"];
    assert_eq!(config["tf_task.py"].as_str().unwrap(), topolab_runtime::tensorflow::TASK_PROGRAM);
    let job: serde_json::Value = serde_json::from_str(config["tf_job.json"].as_str().unwrap()).unwrap();
    assert_eq!(job["trace_dir"], format!("{}/trace", topolab_runtime::k8s::OUT_DIR));
    let pods: Vec<&serde_json::Value> = docs.iter().filter(|x| x["kind"] == "Pod").collect();
    assert_eq!(pods.len(), 3, "1 PS and 2 workers");
    let dns = |role: &str, i: u32| format!("tfj-{role}-{i}.training.svc.cluster.local:2222");
    for pod in pods {
        let c = &pod["spec"]["containers"][0];
        assert_eq!(c["command"], serde_json::json!(["python3", "/etc/topolab/tf_task.py"]));
        // Every TensorFlow task serves, workers too.
        assert_eq!(c["ports"][0]["containerPort"], 2222);
        let env = c["env"].as_array().unwrap();
        let tf: serde_json::Value =
            serde_json::from_str(env.iter().find(|e| e["name"] == "TF_CONFIG").unwrap()["value"].as_str().unwrap())
                .unwrap();
        assert_eq!(tf["cluster"]["ps"], serde_json::json!([dns("ps", 0)]));
        assert_eq!(tf["cluster"]["worker"], serde_json::json!([dns("worker", 0), dns("worker", 1)]));
        let name = format!("tfj-{}-{}", tf["task"]["type"].as_str().unwrap(), tf["task"]["index"]);
        assert_eq!(pod["metadata"]["name"], name);
        assert!(env.iter().any(|e| e["name"] == "TOPOLAB_TRACE_STDOUT"), "traces come back through the log");
        assert_eq!(c["securityContext"]["readOnlyRootFilesystem"], true);
        assert!(c["image"].as_str().unwrap().starts_with("topolab-tensorflow:"));
    }
}

#[test]
fn with_the_cuda_backend_each_worker_pod_asks_for_a_gpu_of_its_own() {
    let d = tmp("cuda");
    let o = topolab(&["k8s", "manifests", "scenarios/gpu/inception-v3-gpu.toml", "--out", d.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let docs = documents(&d.join("job.yaml"));
    for pod in docs.iter().filter(|x| x["kind"] == "Pod") {
        let limits = &pod["spec"]["containers"][0]["resources"]["limits"];
        let worker = pod["metadata"]["labels"]["topolab.dev/role"] == "worker";
        assert_eq!(limits["nvidia.com/gpu"].as_str(), worker.then_some("1"), "{}", pod["metadata"]["name"]);
    }
    // The pods run the scenario's GPU at its precision, device 0 of their own; this machine's
    // CPU is not the measured device.
    let eff = topolab_core::scenario::Scenario::load(&d.join("effective.toml")).unwrap();
    assert_eq!(eff.spec.runtime.backend, topolab_core::scenario::Backend::Cuda);
    assert_eq!(eff.spec.runtime.device, 0);
    assert_eq!(eff.spec.hardware.gpu, "h200");
}

#[test]
fn a_tfjob_has_ps_and_worker_replicas_whose_pods_all_go_when_it_ends() {
    let d = tmp("tfjob");
    let o = tf_manifests(&d, &["--format", "tfjob", "--job", "tfj"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let docs = documents(&d.join("job.yaml"));
    let kinds: Vec<&str> = docs.iter().map(|x| x["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["ConfigMap", "NetworkPolicy", "TFJob"]);
    let tfjob = &docs[2];
    assert_eq!(tfjob["apiVersion"], "kubeflow.org/v1");
    // No shard keeps running after the workers finish; the job succeeds when all of them have.
    assert_eq!(tfjob["spec"]["runPolicy"]["cleanPodPolicy"], "All");
    assert_eq!(tfjob["spec"]["successPolicy"], "AllWorkers");
    let replicas = &tfjob["spec"]["tfReplicaSpecs"];
    assert_eq!(replicas["PS"]["replicas"], 1);
    assert_eq!(replicas["Worker"]["replicas"], 2);
    for r in ["PS", "Worker"] {
        let c = &replicas[r]["template"]["spec"]["containers"][0];
        // The operator requires this container name and sets TF_CONFIG itself.
        assert_eq!(c["name"], "tensorflow");
        assert!(!c["env"].as_array().unwrap().iter().any(|e| e["name"] == "TF_CONFIG"), "{r}");
        assert_eq!(
            replicas[r]["template"]["metadata"]["labels"]["topolab.dev/job"], "tfj",
            "the NetworkPolicy admits it"
        );
    }
    // A TFJob runs TensorFlow only.
    let o = manifests(&d.join("no"), &["--format", "tfjob"]);
    assert!(super::bad_input_line(&o).contains("--engine tensorflow"));
}

#[test]
#[ignore = "needs kubernetes-validate (scripts/setup-k8s-validate.sh): cargo test -- --ignored"]
fn manifests_pass_strict_validation_against_the_kubernetes_schemas() {
    let validator = root().join(".venv-tools/bin/kubernetes-validate");
    assert!(validator.exists(), "kubernetes-validate is not installed: run bash scripts/setup-k8s-validate.sh");
    let _guard = super::replay::machine_lock();
    let d = tmp("validate");
    for (dir, extra) in [("pvc", vec![]), ("kind", vec!["--kind"])] {
        let out = d.join(dir);
        let o = manifests(&out, &extra);
        assert!(o.status.success(), "{}", stderr(&o));
        let v = Command::new(&validator)
            .args(["--strict", "--kubernetes-version", KUBERNETES_VERSION])
            .arg(out.join("job.yaml"))
            .output()
            .unwrap();
        assert!(
            v.status.success(),
            "{dir}: {}\n{}",
            String::from_utf8_lossy(&v.stdout),
            String::from_utf8_lossy(&v.stderr)
        );
    }
    // TensorFlow's pods; and a TFJob's pod templates (the TFJob itself is a custom resource,
    // outside Kubernetes' schemas), each as the Pod the operator makes of it.
    let out = d.join("tensorflow");
    let o = tf_manifests(&out, &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    let tfjob = d.join("tfjob");
    let o = tf_manifests(&tfjob, &["--format", "tfjob"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let mut templates = String::new();
    for doc in documents(&tfjob.join("job.yaml")) {
        for (role, r) in doc["spec"]["tfReplicaSpecs"].as_object().into_iter().flatten() {
            let pod = serde_json::json!({"apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": format!("t-{}", role.to_lowercase()), "labels": r["template"]["metadata"]["labels"]},
                "spec": r["template"]["spec"]});
            templates.push_str(&format!("---\n{}", serde_yaml::to_string(&pod).unwrap()));
        }
    }
    assert_eq!(templates.matches("kind: Pod").count(), 2);
    std::fs::write(tfjob.join("templates.yaml"), templates).unwrap();
    for file in [out.join("job.yaml"), tfjob.join("templates.yaml")] {
        let v = Command::new(&validator)
            .args(["--strict", "--kubernetes-version", KUBERNETES_VERSION])
            .arg(&file)
            .output()
            .unwrap();
        assert!(v.status.success(), "{}: {}", file.display(), String::from_utf8_lossy(&v.stdout));
    }
}

/// The Kubernetes version the manifests are validated against (k8s-openapi's `v1_33`).
const KUBERNETES_VERSION: &str = "1.33";

/// Removes the per-namespace hosts files of the executed-manifests test, also when it fails,
/// and /etc/netns itself if the test created it.
struct HostsFiles {
    dirs: Vec<std::path::PathBuf>,
    created_root: bool,
}

impl Drop for HostsFiles {
    fn drop(&mut self) {
        for d in &self.dirs {
            let _ = std::fs::remove_dir_all(d);
        }
        if self.created_root {
            let _ = std::fs::remove_dir("/etc/netns");
        }
    }
}

/// Pods of a job.yaml run for real: each container a process in its own network namespace,
/// the Services' names in the namespaces' hosts files, the ConfigMap, the Secret and the
/// emptyDirs as directories under `d`; one log per pod (stdout and stderr, as a container's).
struct ExecutedPods {
    /// Pod names, in the manifests' order.
    names: Vec<String>,
    /// Each pod's exit status (`None`: still running at the deadline, then killed).
    statuses: Vec<(String, Option<std::process::ExitStatus>)>,
    /// When the late pod's peers became resolvable.
    resolved_at: u64,
}

/// Runs the pods of `job_yaml` (the program of each container as `program` says) until the
/// workers exit; the pod named `*-{late}` starts before its shards' names resolve. Every
/// namespace and hosts file is removed, also when a pod fails.
fn execute_pods(
    d: &std::path::Path,
    job_yaml: &std::path::Path,
    late: &str,
    program: &dyn Fn(&serde_json::Value) -> Command,
) -> ExecutedPods {
    use topolab_runtime::cluster::{ClusterSpec, ENV, TOKEN_FILE_ENV};
    let docs = documents(job_yaml);
    // The volumes as directories: the ConfigMap's files, the Secret's token, the checkpoints
    // and each pod's emptyDir.
    let config = d.join("config");
    std::fs::create_dir_all(&config).unwrap();
    for (k, v) in docs[0]["data"].as_object().unwrap() {
        std::fs::write(config.join(k), v.as_str().unwrap()).unwrap();
    }
    let secret = d.join("secret");
    std::fs::create_dir_all(&secret).unwrap();
    if let Some(sec) = docs.iter().find(|o| o["kind"] == "Secret") {
        std::fs::write(secret.join("token"), sec["stringData"]["token"].as_str().unwrap()).unwrap();
    }
    let pods: Vec<&serde_json::Value> = docs.iter().filter(|o| o["kind"] == "Pod").collect();
    let services = docs.iter().filter(|o| o["kind"] == "Service").count();
    // One virtual host per pod; each Service name resolves to its pod's address through the
    // namespace's hosts file (`ip netns exec` bind-mounts /etc/netns/NS/hosts over /etc/hosts).
    let cluster = topolab_runtime::netns::VirtualCluster::create(
        &format!("{}-k8s", std::process::id()),
        pods.len(),
        topolab_core::units::BitRate(1e9),
        topolab_core::units::Time::ZERO,
    )
    .unwrap();
    let mut hosts_files = HostsFiles { dirs: Vec::new(), created_root: !std::path::Path::new("/etc/netns").exists() };
    let names: Vec<String> = pods.iter().map(|p| p["metadata"]["name"].as_str().unwrap().to_string()).collect();
    let ns = pods[0]["metadata"]["namespace"].as_str().unwrap().to_string();
    let table = |with_ps: bool| {
        let mut t = String::from("127.0.0.1 localhost\n");
        for (i, n) in names.iter().enumerate() {
            if with_ps || !n.contains("-ps-") {
                t.push_str(&format!("{} {n}.{ns}.svc.cluster.local {n}\n", cluster.addrs[i]));
            }
        }
        t
    };
    assert_eq!(services, names.len());
    let late = names.iter().position(|n| n.ends_with(&format!("-{late}"))).unwrap();
    for (i, host) in cluster.hosts.iter().enumerate() {
        let dir = std::path::Path::new("/etc/netns").join(host);
        std::fs::create_dir_all(&dir).unwrap();
        hosts_files.dirs.push(dir.clone());
        // The late pod starts before the shards' names resolve on its host.
        std::fs::write(dir.join("hosts"), table(i != late)).unwrap();
    }
    let mount = |v: &str, out: &std::path::Path| {
        v.replace(topolab_runtime::k8s::SECRET_DIR, secret.to_str().unwrap())
            .replace(topolab_runtime::k8s::OUT_DIR, out.to_str().unwrap())
            .replace(topolab_runtime::k8s::CONFIG_DIR, config.to_str().unwrap())
    };
    let mut children = Vec::new();
    for (i, pod) in pods.iter().enumerate() {
        let c = &pod["spec"]["containers"][0];
        let out = d.join(format!("out-{}", names[i]));
        std::fs::create_dir_all(&out).unwrap();
        let log = std::fs::File::create(d.join(format!("{}.log", names[i]))).unwrap();
        let mut cmd = program(c);
        // Run it in the pod's host.
        let mut inner = cluster.command(i, std::path::Path::new(cmd.get_program()));
        inner.args(cmd.get_args().map(|a| mount(a.to_str().unwrap(), &out)));
        for e in c["env"].as_array().unwrap() {
            let (k, v) = (e["name"].as_str().unwrap(), e["value"].as_str().unwrap());
            let v = match k {
                k if k == ENV => {
                    // Mount points become the directories above.
                    let mut spec: ClusterSpec = serde_json::from_str(v).unwrap();
                    spec.job.scenario = config.join("scenario.toml");
                    spec.job.out = out.clone();
                    spec.job.checkpoint_dir = d.join("checkpoints");
                    serde_json::to_string(&spec).unwrap()
                }
                "TOPOLAB_TF_JOB" => {
                    // The job file says where the traces go: this pod's directory.
                    let mut job: serde_json::Value =
                        serde_json::from_str(&std::fs::read_to_string(config.join("tf_job.json")).unwrap()).unwrap();
                    job["trace_dir"] = serde_json::json!(out.join("trace"));
                    let p = out.join("tf_job.json");
                    std::fs::write(&p, job.to_string()).unwrap();
                    p.display().to_string()
                }
                k if k == TOKEN_FILE_ENV || k == "HOME" => mount(v, &out),
                _ => v.to_string(),
            };
            inner.env(k, v);
        }
        for (k, v) in cmd.get_envs() {
            inner.env(k, v.unwrap());
        }
        if c["env"].as_array().unwrap().iter().any(|e| e["name"] == "HOME") {
            inner.env("HOME", &out);
        }
        cmd = inner;
        cmd.stdin(std::process::Stdio::null()).stdout(log.try_clone().unwrap()).stderr(log);
        children.push((names[i].clone(), cmd.spawn().unwrap()));
    }
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let resolved_at = topolab_runtime::wire::monotonic_ns();
    std::fs::write(std::path::Path::new("/etc/netns").join(&cluster.hosts[late]).join("hosts"), table(true)).unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(180);
    let mut statuses = Vec::new();
    // Workers first: TensorFlow's shards serve until stopped.
    let mut order: Vec<usize> = (0..children.len()).collect();
    order.sort_by_key(|&i| children[i].0.contains("-ps-"));
    let mut children: Vec<Option<(String, std::process::Child)>> = children.into_iter().map(Some).collect();
    for i in order {
        let (name, mut child) = children[i].take().unwrap();
        let shard = name.contains("-ps-");
        let st = loop {
            if let Some(st) = child.try_wait().unwrap() {
                break Some(st);
            }
            let workers_done = statuses.iter().filter(|(n, _): &&(String, _)| !n.contains("-ps-")).count()
                == names.iter().filter(|n| !n.contains("-ps-")).count();
            // TensorFlow's shards (the task program in the ConfigMap) serve until stopped.
            let serves = config.join("tf_task.py").exists();
            if std::time::Instant::now() > deadline || (shard && workers_done && serves) {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        };
        statuses.push((name, st));
    }
    drop(cluster);
    drop(hosts_files);
    for ns in ip_netns() {
        assert!(!ns.contains(&format!("{}-k8s", std::process::id())), "namespace {ns} left behind");
    }
    ExecutedPods { names, statuses, resolved_at }
}

/// The traces a worker's log carries, read back as the Kubernetes launcher does, and its last
/// progress line.
fn traces_from_log(log: &std::path::Path) -> (std::collections::BTreeMap<String, String>, u64) {
    let text = std::fs::read_to_string(log).unwrap();
    let mut reader = topolab_runtime::tracelog::Reader::new();
    let mut files = std::collections::BTreeMap::new();
    let mut progress = 0;
    for line in text.lines() {
        match reader.line(line).unwrap() {
            topolab_runtime::tracelog::Line::File(f, text) => drop(files.insert(f, text)),
            topolab_runtime::tracelog::Line::Progress(n) => progress = n,
            _ => {}
        }
    }
    (files, progress)
}

#[test]
#[ignore = "needs root (network namespaces): as root, cargo test -- --ignored"]
fn the_generated_pods_run_as_processes_in_namespaces_and_train_with_a_late_dns_name() {
    assert!(topolab_runtime::netns::is_root(), "this test needs root (network namespaces)");
    let _guard = super::replay::machine_lock();
    let d = tmp("executed");
    let o = manifests(&d.join("k8s"), &["--namespace", "training"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let program = |c: &serde_json::Value| {
        assert_eq!(c["command"], serde_json::json!(["/usr/local/bin/topolab", "node"]));
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_topolab"));
        cmd.arg("node");
        cmd
    };
    let run = execute_pods(&d, &d.join("k8s/job.yaml"), "worker-0", &program);
    let names = &run.names;
    assert_eq!(names.len(), 4);
    for (name, st) in &run.statuses {
        let log = std::fs::read_to_string(d.join(format!("{name}.log"))).unwrap_or_default();
        assert!(st.is_some_and(|s| s.success()), "{name}: {st:?}\n{log}");
    }
    // Both workers trained every step, as under the netns launcher; the late one started
    // only once its shards' names resolved.
    let s =
        topolab_core::scenario::Scenario::load(&root().join("scenarios/examples/tiny-mlp-custom-gpu.toml")).unwrap();
    let steps = s.spec.training.steps as usize;
    for (w, name) in names.iter().filter(|n| n.contains("-worker-")).enumerate() {
        let p = d.join(format!("out-{name}/trace/worker-{w}.steps.csv"));
        let f = std::fs::File::open(&p).unwrap();
        let recs = topolab_core::records::read_steps_csv(f, "steps").unwrap();
        assert_eq!(recs.len(), steps, "{name}");
        if name.ends_with("-worker-0") {
            assert!(recs[0].start_ns >= run.resolved_at, "worker 0 began before its shards' names resolved");
        }
        // The launcher reads the traces back from the pods' logs: there they are whole, equal
        // to the files, between the runtime's own lines.
        let (files, progress) = traces_from_log(&d.join(format!("{name}.log")));
        assert_eq!(progress, steps as u64, "{name}'s last progress line");
        for kind in ["steps", "ops", "loss"] {
            let f = format!("worker-{w}.{kind}.csv");
            let on_disk = std::fs::read_to_string(d.join(format!("out-{name}/trace/{f}"))).unwrap();
            assert_eq!(files.get(&f), Some(&on_disk), "{f} from {name}'s log");
        }
    }
    let worker1 = names.iter().find(|n| n.ends_with("-worker-1")).unwrap();
    let loss = std::fs::read_to_string(d.join(format!("out-{worker1}/trace/worker-1.loss.csv"))).unwrap();
    let values: Vec<f64> = loss.lines().skip(1).filter_map(|l| l.split(',').nth(2)?.parse().ok()).collect();
    assert!(values[values.len() - 1] < values[0], "the loss falls: {values:?}");
}

#[test]
#[ignore = "needs root and TensorFlow (scripts/setup-tensorflow.sh): as root, cargo test -- --ignored"]
fn tensorflow_pods_run_as_processes_in_namespaces_and_their_logs_carry_their_traces() {
    assert!(topolab_runtime::netns::is_root(), "this test needs root (network namespaces)");
    let tf = topolab_runtime::tensorflow::find().expect("TensorFlow (bash scripts/setup-tensorflow.sh)");
    let _guard = super::replay::machine_lock();
    let d = tmp("executed-tf");
    let o = tf_manifests(&d.join("k8s"), &["--namespace", "training"]);
    assert!(o.status.success(), "{}", stderr(&o));
    // The image's python3 is this machine's TensorFlow Python.
    let program = |c: &serde_json::Value| {
        let cmd = c["command"].as_array().unwrap();
        assert_eq!(cmd[0], "python3");
        let mut p = Command::new(&tf.python);
        p.arg(cmd[1].as_str().unwrap());
        p
    };
    let run = execute_pods(&d, &d.join("k8s/job.yaml"), "worker-1", &program);
    let s =
        topolab_core::scenario::Scenario::load(&root().join("scenarios/examples/tiny-mlp-tensorflow.toml")).unwrap();
    for (name, st) in run.statuses.iter().filter(|(n, _)| n.contains("-worker-")) {
        let log = std::fs::read_to_string(d.join(format!("{name}.log"))).unwrap_or_default();
        assert!(st.is_some_and(|s| s.success()), "{name}: {st:?}\n{log}");
        let w: u32 = name.rsplit('-').next().unwrap().parse().unwrap();
        let (files, progress) = traces_from_log(&d.join(format!("{name}.log")));
        assert!(progress >= 1, "{name} reported progress");
        let steps = &files[&format!("worker-{w}.steps.csv")];
        let on_disk = std::fs::read_to_string(d.join(format!("out-{name}/trace/worker-{w}.steps.csv"))).unwrap();
        assert_eq!(steps, &on_disk, "{name}'s steps from its log");
        assert!(steps.lines().count() > 1 && s.spec.training.steps > 0);
    }
}

fn ip_netns() -> Vec<String> {
    let out = Command::new("ip").args(["netns", "list"]).output().unwrap();
    String::from_utf8_lossy(&out.stdout).lines().map(String::from).collect()
}
