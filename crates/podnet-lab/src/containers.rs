//! Containers: processes inside a pod's sandbox, supervised like kubelet supervises them.
//!
//! Each container runs in its own process group inside the sandbox's network and UTS
//! namespaces, with its output in a log file. When it exits, the pod's `restartPolicy`
//! decides whether it starts again, after a back-off that doubles up to a cap
//! (`CrashLoopBackOff`). Stopping sends SIGTERM to the whole group, then SIGKILL after a grace
//! period.

use std::fs::OpenOptions;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use podnet_netlink::{Netns, UtsNs};
use serde::{Deserialize, Serialize};
use tokio::process::Child;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// How long a stopping container has between SIGTERM and SIGKILL.
const GRACE_PERIOD: Duration = Duration::from_secs(2);
/// First and longest wait before restarting a container that exited.
const BACKOFF_START: Duration = Duration::from_millis(500);
const BACKOFF_CAP: Duration = Duration::from_secs(10);
/// How often a readiness probe is retried.
const PROBE_INTERVAL: Duration = Duration::from_millis(25);

/// What to run, and how to tell it is ready.
#[derive(Debug, Clone)]
pub struct ContainerSpec {
    /// The container's name.
    pub name: String,
    /// Program and arguments.
    pub argv: Vec<String>,
    /// Environment.
    pub env: Vec<(String, String)>,
    /// A TCP port on localhost that accepts connections once the container is ready.
    pub ready_port: Option<u16>,
    /// Whether to start it again after it exits, and when.
    pub restart: RestartPolicy,
}

/// A pod's `restartPolicy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RestartPolicy {
    /// Always restart.
    Always,
    /// Restart after a failure only.
    OnFailure,
    /// Never restart.
    Never,
}

impl RestartPolicy {
    /// Parses a pod's `restartPolicy` (default `Always`).
    pub fn parse(text: Option<&str>) -> Self {
        match text {
            Some("OnFailure") => RestartPolicy::OnFailure,
            Some("Never") => RestartPolicy::Never,
            _ => RestartPolicy::Always,
        }
    }

    fn restarts_after(self, exit_code: Option<i32>) -> bool {
        match self {
            RestartPolicy::Always => true,
            RestartPolicy::OnFailure => exit_code != Some(0),
            RestartPolicy::Never => false,
        }
    }
}

/// A container's state, as `kubectl get pod` summarises it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerStatus {
    /// The container's name.
    pub name: String,
    /// `Waiting`, `Running` or `Terminated`.
    pub state: String,
    /// Why it is waiting or terminated (`ContainerCreating`, `CrashLoopBackOff`, `Error`, ...).
    pub reason: Option<String>,
    /// The last exit code.
    pub exit_code: Option<i32>,
    /// Whether it passed its readiness check.
    pub ready: bool,
    /// How often it was restarted.
    pub restarts: u32,
    /// Whether it has run at least once (or failed to start).
    pub settled: bool,
}

/// The sandbox namespaces a container runs in.
#[derive(Debug, Clone)]
pub struct Namespaces {
    /// The sandbox's network namespace.
    pub netns: Arc<Netns>,
    /// The sandbox's UTS namespace.
    pub uts: Arc<UtsNs>,
}

/// A supervised container.
pub struct Container {
    status: Arc<Mutex<ContainerStatus>>,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl Container {
    /// Starts supervising: the first start happens at once, in the background.
    pub fn start(spec: ContainerSpec, namespaces: Namespaces, log: PathBuf) -> Self {
        let status = Arc::new(Mutex::new(ContainerStatus {
            name: spec.name.clone(),
            state: "Waiting".into(),
            reason: Some("ContainerCreating".into()),
            exit_code: None,
            ready: false,
            restarts: 0,
            settled: false,
        }));
        let (stop, stopped) = watch::channel(false);
        let task = tokio::spawn(supervise(spec, namespaces, log, status.clone(), stopped));
        Container { status, stop, task }
    }

    /// The container's current status.
    pub fn status(&self) -> ContainerStatus {
        self.status.lock().expect("status lock").clone()
    }

    /// Asks the container to stop without waiting.
    pub fn request_stop(&self) {
        let _ = self.stop.send(true);
    }

    /// Stops the container (SIGTERM, then SIGKILL after the grace period) and waits for it.
    pub async fn stop(self) {
        self.request_stop();
        let _ = self.task.await;
    }
}

async fn supervise(
    spec: ContainerSpec,
    namespaces: Namespaces,
    log: PathBuf,
    status: Arc<Mutex<ContainerStatus>>,
    mut stopped: watch::Receiver<bool>,
) {
    let update = |change: &dyn Fn(&mut ContainerStatus)| change(&mut status.lock().expect("status lock"));
    let mut backoff = BACKOFF_START;
    loop {
        let exit_code = match launch(&spec, &namespaces, &log).await {
            Err(err) => {
                append_log(&log, &format!("podnet: cannot start {:?}: {err}\n", spec.argv));
                update(&|s| {
                    s.state = "Waiting".into();
                    s.reason = Some("StartError".into());
                    s.settled = true;
                });
                None
            }
            Ok(mut child) => {
                update(&|s| {
                    s.state = "Running".into();
                    s.reason = None;
                    s.ready = spec.ready_port.is_none();
                    s.settled = s.ready;
                });
                let probe = probe_ready(spec.ready_port, &namespaces, &status);
                let exit_code = tokio::select! {
                    exit = child.wait() => exit.ok().and_then(|exit| exit.code().or(Some(128 + exit_signal(&exit)))),
                    _ = stopped.changed() => {
                        terminate(&mut child).await;
                        update(&|s| { s.state = "Terminated".into(); s.reason = Some("Completed".into()); s.ready = false; });
                        return;
                    }
                    _ = probe => unreachable!("the probe never finishes"),
                };
                update(&|s| {
                    s.state = "Terminated".into();
                    s.reason = Some(
                        if exit_code == Some(0) {
                            "Completed"
                        } else {
                            "Error"
                        }
                        .into(),
                    );
                    s.exit_code = exit_code;
                    s.ready = false;
                    s.settled = true;
                });
                exit_code
            }
        };
        if !spec.restart.restarts_after(exit_code) || *stopped.borrow() {
            return;
        }
        update(&|s| {
            s.state = "Waiting".into();
            s.reason = Some("CrashLoopBackOff".into());
        });
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = stopped.changed() => return,
        }
        backoff = (backoff * 2).min(BACKOFF_CAP);
        update(&|s| s.restarts += 1);
    }
}

/// Starts the process inside the sandbox's namespaces, in its own process group.
async fn launch(spec: &ContainerSpec, namespaces: &Namespaces, log: &PathBuf) -> std::io::Result<Child> {
    let output = OpenOptions::new().create(true).append(true).open(log)?;
    let errors = output.try_clone()?;
    let runtime = tokio::runtime::Handle::current();
    let spec = spec.clone();
    let namespaces = namespaces.clone();
    tokio::task::spawn_blocking(move || {
        podnet_netlink::netns::run_in(&namespaces.netns, Some(&namespaces.uts), move || {
            // The child inherits this thread's namespaces; tokio must see it to reap it.
            let _context = runtime.enter();
            let (program, args) = spec.argv.split_first().expect("validated: a program to run");
            tokio::process::Command::new(program)
                .args(args)
                .env_clear()
                .envs(spec.env.iter().map(|(key, value)| (key, value)))
                .current_dir("/")
                .stdin(Stdio::null())
                .stdout(Stdio::from(output))
                .stderr(Stdio::from(errors))
                .process_group(0)
                .spawn()
        })
        .map_err(std::io::Error::other)?
    })
    .await
    .map_err(std::io::Error::other)?
}

/// Marks the container ready once its port accepts a connection; never returns.
async fn probe_ready(port: Option<u16>, namespaces: &Namespaces, status: &Arc<Mutex<ContainerStatus>>) {
    if let Some(port) = port {
        loop {
            let netns = namespaces.netns.clone();
            let accepted = tokio::task::spawn_blocking(move || {
                netns
                    .run(|| {
                        std::net::TcpStream::connect_timeout(
                            &([127, 0, 0, 1], port).into(),
                            Duration::from_millis(200),
                        )
                        .is_ok()
                    })
                    .unwrap_or(false)
            })
            .await
            .unwrap_or(false);
            if accepted {
                let mut status = status.lock().expect("status lock");
                status.ready = true;
                status.settled = true;
                break;
            }
            tokio::time::sleep(PROBE_INTERVAL).await;
        }
    }
    std::future::pending::<()>().await;
}

/// SIGTERM to the whole process group, SIGKILL after the grace period.
async fn terminate(child: &mut Child) {
    let Some(pid) = child.id() else { return };
    let group = Pid::from_raw(pid as i32);
    let _ = killpg(group, Signal::SIGTERM);
    if tokio::time::timeout(GRACE_PERIOD, child.wait()).await.is_err() {
        let _ = killpg(group, Signal::SIGKILL);
        let _ = child.wait().await;
    }
    // Children that left the group's leader behind still belong to the group.
    let _ = killpg(group, Signal::SIGKILL);
}

fn exit_signal(status: &std::process::ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    status.signal().unwrap_or(0)
}

fn append_log(log: &PathBuf, text: &str) {
    use std::io::Write;
    if let Ok(mut file) = OpenOptions::new().create(true).append(true).open(log) {
        let _ = file.write_all(text.as_bytes());
    }
}
