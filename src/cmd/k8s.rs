//! `topolab k8s`: a replay's Kubernetes objects.

use std::path::PathBuf;
use std::process::ExitCode;

use topolab_runtime::k8s::{self, CheckpointVolume, ManifestOptions};
use topolab_runtime::launcher::{self, LauncherKind, ReplayCompute, ReplaySettings};
use topolab_runtime::proxy::Proxy;

use super::BadInput;

/// Kubernetes objects of a replay.
#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: K8sCommand,
}

#[derive(clap::Subcommand)]
enum K8sCommand {
    Manifests(ManifestArgs),
}

/// Write the objects a Kubernetes replay of a scenario creates, as YAML (job.yaml).
#[derive(clap::Args)]
#[command(after_help = "\
Writes DIR/job.yaml (one document per object: the parent ConfigMap with the effective scenario,
the job token as a Secret, per task a Pod and a headless Service for its DNS name, a
NetworkPolicy admitting only the job's pods, and the checkpoint volume) next to the effective
scenario it replays (DIR/effective.toml, DIR/effective-model.csv). The pods run the image's
`topolab node` as a non-root user with a read-only root file system and no capabilities.

Apply by hand with `kubectl apply -f DIR/job.yaml`; remove everything with
`kubectl delete all,cm,secret,networkpolicy,pvc -l topolab.dev/job=JOB`. `topolab replay
--launcher k8s` creates the same objects itself, and deletes them when the job ends.

With --engine tensorflow the pods run real TensorFlow (the task program and its job in the
ConfigMap, TF_CONFIG per pod; image from Dockerfile.tensorflow); --format tfjob writes one
Kubeflow TFJob (kubeflow.org/v1) for the training operator instead of the pods and services.

Examples:
  topolab k8s manifests scenarios/examples/tiny-mlp-custom-gpu.toml --out k8s/tiny
  topolab k8s manifests S.toml --out k8s/s --image registry.example/topolab:0.1.0 --namespace training
  topolab k8s manifests S.toml --out k8s/s --kind          # checkpoints on the kind nodes' extraMounts
  topolab k8s manifests scenarios/examples/tiny-mlp-tensorflow.toml --engine tensorflow --format tfjob --out k8s/tf")]
pub struct ManifestArgs {
    /// Scenario file.
    scenario: PathBuf,
    /// Directory to write job.yaml and the effective scenario into.
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
    /// Container image: with /usr/local/bin/topolab (Dockerfile; default topolab:latest), or
    /// with --engine tensorflow Python with TensorFlow (Dockerfile.tensorflow; default
    /// topolab-tensorflow:latest).
    #[arg(long, value_name = "IMG")]
    image: Option<String>,
    /// Namespace of the objects.
    #[arg(long, default_value = "default", value_name = "NS")]
    namespace: String,
    /// Job name: prefixes every object (default: the scenario's name, as a DNS label).
    #[arg(long)]
    job: Option<String>,
    /// What the pods run: `topolab node`, or real TensorFlow (the task program in the parent
    /// ConfigMap, TF_CONFIG per pod).
    #[arg(long, value_enum, default_value_t)]
    engine: super::replay::EngineArg,
    /// What to write: pods and services (`pods`), or with --engine tensorflow one Kubeflow
    /// TFJob (`tfjob`, for the training operator).
    #[arg(long, value_enum, default_value_t)]
    format: ManifestFormat,
    /// Checkpoints on a hostPath backed by the kind config's extraMounts (kind/cluster.yaml)
    /// instead of a ReadWriteMany PersistentVolumeClaim.
    #[arg(long)]
    kind: bool,
    /// Seconds a task waits for its peers (their names to resolve, their connections).
    #[arg(long, default_value_t = 120, value_name = "S")]
    timeout: u64,
}

/// What `topolab k8s manifests` writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, Default)]
pub enum ManifestFormat {
    /// A Pod and a headless Service per task.
    #[default]
    Pods,
    /// A Kubeflow TFJob (kubeflow.org/v1), with --engine tensorflow.
    Tfjob,
}

/// The default image of an engine's pods.
pub fn default_image(engine: super::replay::EngineArg) -> &'static str {
    match engine {
        super::replay::EngineArg::Topolab => "topolab:latest",
        super::replay::EngineArg::Tensorflow => "topolab-tensorflow:latest",
    }
}

/// The host directory kind's nodes mount for checkpoints (kind/cluster.yaml, extraMounts).
pub const KIND_CHECKPOINTS: &str = "/var/lib/topolab/checkpoints";

/// Where a job's checkpoints go: on kind a hostPath, else a claim for every shard's
/// checkpoint twice (the one being written and the last complete one) of `params` bytes of
/// parameters (with their optimizer state: 3x).
pub fn checkpoint_volume(kind: bool, params: u64) -> CheckpointVolume {
    if kind {
        CheckpointVolume::HostPath(KIND_CHECKPOINTS.into())
    } else {
        CheckpointVolume::Claim { bytes: 2 * 3 * params }
    }
}

pub fn run(a: Args) -> anyhow::Result<ExitCode> {
    match a.command {
        K8sCommand::Manifests(m) => manifests(m),
    }
}

fn manifests(a: ManifestArgs) -> anyhow::Result<ExitCode> {
    use super::replay::EngineArg;
    let tensorflow = a.engine == EngineArg::Tensorflow;
    if a.format == ManifestFormat::Tfjob && !tensorflow {
        return Err(BadInput("error: --format tfjob: a TFJob runs TensorFlow; add --engine tensorflow".into()).into());
    }
    let s = super::load_scenario(Some(&a.scenario))?;
    let image = a.image.clone().unwrap_or_else(|| default_image(a.engine).into());
    let job = a.job.clone().unwrap_or_else(|| k8s::dns_label(&s.spec.name));
    // The same checks as the objects make, before anything is written.
    k8s::check_label("job name", &job, 40).map_err(|e| BadInput(format!("error: --job: {e}")))?;
    k8s::check_label("namespace", &a.namespace, 63).map_err(|e| BadInput(format!("error: --namespace: {e}")))?;
    k8s::check_image(&image).map_err(|e| BadInput(format!("error: --image: {e}")))?;
    // What the replay runs: refused here, before anything is written, as `replay` refuses it.
    if s.spec.topology.kind == topolab_core::scenario::TopologyKind::AllReduce {
        return Err(BadInput(format!(
            "error: {}: Kubernetes manifests of an all-reduce are not built yet (the pods run parameter-server jobs); `topolab replay --launcher local` or `--launcher netns` replays its ring",
            s.origin
        ))
        .into());
    }
    let plan = topolab_core::plan::Plan::new(&s).map_err(|e| BadInput(format!("error: {}: {e}", s.origin)))?;
    if tensorflow {
        if s.spec.network.latency.0 > 0 {
            return Err(BadInput(format!(
                "error: --engine tensorflow: network.latency = {}: topolab does not shape a cluster's network and TensorFlow's gRPC cannot emulate latency; set latency = \"0 us\"",
                s.spec.network.latency
            ))
            .into());
        }
        if let Some(why) = topolab_runtime::tensorflow::refusal(&s, &plan, false, false) {
            return Err(BadInput(format!("error: --engine tensorflow: {why}")).into());
        }
    }
    std::fs::create_dir_all(&a.out)?;
    let settings = ReplaySettings::of(&s);
    let proxy = Proxy::new(&s, settings.params_scale, settings.flops_scale);
    let compute = match s.spec.runtime.backend {
        topolab_core::scenario::Backend::Cpu => ReplayCompute::Cpu,
        topolab_core::scenario::Backend::Cuda => ReplayCompute::ClusterGpu,
    };
    let (eff_path, eff) = launcher::effective_scenario(&s, &proxy, &a.out, LauncherKind::K8s, &compute)?;
    let eff_toml = std::fs::read_to_string(&eff_path)?;
    let layers = std::fs::read_to_string(a.out.join("effective-model.csv"))?;
    let params: u64 = proxy.var_sizes().iter().map(|&n| n as u64 * 4).sum();
    let tf_job = tensorflow.then(|| -> anyhow::Result<serde_json::Value> {
        let eff_plan = topolab_core::plan::Plan::new(&eff)?;
        let eff_proxy = Proxy::from_effective(&eff);
        let trace = std::path::PathBuf::from(format!("{}/trace", k8s::OUT_DIR));
        let lr = f64::from(settings.learning_rate);
        Ok(topolab_runtime::tensorflow::job(&eff, &eff_plan, &eff_proxy, &trace, 0, lr, a.timeout))
    });
    let opts = ManifestOptions {
        job: job.clone(),
        namespace: a.namespace.clone(),
        image,
        checkpoints: checkpoint_volume(a.kind, params),
        timeout_s: a.timeout,
        tensorflow: tf_job.transpose()?,
    };
    let mut objects = k8s::objects(&eff, &eff_toml, &layers, &opts)
        .map_err(|e| BadInput(format!("error: cannot make manifests: {e}")))?;
    if a.format == ManifestFormat::Tfjob {
        objects = k8s::tfjob(&objects, &opts).map_err(|e| BadInput(format!("error: {e}")))?;
    }
    let token = topolab_runtime::wire::Token::random().hex();
    let path = a.out.join("job.yaml");
    topolab_sim::write_atomic(&path, k8s::to_yaml(&objects, &token).as_bytes())?;
    let count = |kind: &str| objects.iter().filter(|o| o["kind"] == kind).count();
    let what = if a.format == ManifestFormat::Tfjob {
        "a Kubeflow TFJob".to_string()
    } else {
        format!("{} pods and {} headless services", count("Pod"), count("Service"))
    };
    let storage = if tensorflow {
        ""
    } else if a.kind {
        "; checkpoints on the kind nodes' extraMounts"
    } else {
        ", a PersistentVolumeClaim"
    };
    println!(
        "wrote {} ({what} for {} PS and {} workers{}, a ConfigMap{}, a NetworkPolicy{storage}) for namespace {}",
        path.display(),
        s.spec.topology.ps,
        s.spec.topology.workers,
        if tensorflow { " running TensorFlow" } else { "" },
        if tensorflow { "" } else { ", a Secret" },
        a.namespace
    );
    println!(
        "apply: kubectl apply -f {}; remove: kubectl delete {},cm,networkpolicy{} -l topolab.dev/job={job}",
        path.display(),
        if a.format == ManifestFormat::Tfjob { "tfjob" } else { "all" },
        if tensorflow { "" } else { ",secret,pvc" },
    );
    Ok(ExitCode::SUCCESS)
}
