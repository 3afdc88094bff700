//! Containers: processes inside a pod's sandbox, supervised like kubelet supervises them.
//!
//! Each container runs in its own process group inside the sandbox's network and UTS
//! namespaces, with its output in a log file. When it exits, the pod's `restartPolicy`
//! decides whether it starts again, after a back-off that doubles up to a cap
//! (`CrashLoopBackOff`). A readiness probe (exec, TCP or HTTP, as the pod spec says) decides
//! whether it is ready; a container without one is ready once it runs, and probing goes on
//! while it stops. Stopping runs the `preStop` hook, sends SIGTERM to the whole group, and
//! SIGKILL when the grace period is over; a later request with a shorter grace period (the lab
//! going down) brings the SIGKILL forward.

use std::fs::OpenOptions;
use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use podnet_netlink::{Netns, UtsNs};
use serde::{Deserialize, Serialize};
use tokio::process::Child;
use tokio::sync::watch;

/// First and longest wait before restarting a container that exited.
const BACKOFF_START: Duration = Duration::from_millis(500);
const BACKOFF_CAP: Duration = Duration::from_secs(10);

/// What to run, how to tell it is ready, how to stop it.
#[derive(Debug, Clone)]
pub struct ContainerSpec {
    /// The container's name.
    pub name: String,
    /// Program and arguments.
    pub argv: Vec<String>,
    /// Environment.
    pub env: Vec<(String, String)>,
    /// When the container counts as ready.
    pub readiness: Readiness,
    /// What runs before SIGTERM when the container is stopped.
    pub pre_stop: Option<Action>,
    /// Whether to start it again after it exits, and when.
    pub restart: RestartPolicy,
}

/// When a container counts as ready.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Readiness {
    /// As soon as it runs.
    Running,
    /// Once this port on localhost accepts a connection (a built-in server without a probe).
    Listening(u16),
    /// As its readiness probe says, for as long as it runs.
    Probe(Probe),
}

/// A readiness probe, as a pod spec describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Probe {
    /// What the probe does.
    pub action: Action,
    /// Wait before the first probe.
    pub initial_delay: Duration,
    /// Time between probes.
    pub period: Duration,
    /// How long one probe may take.
    pub timeout: Duration,
    /// Consecutive successes that make the container ready.
    pub success_threshold: u32,
    /// Consecutive failures that make it not ready.
    pub failure_threshold: u32,
}

/// A probe's or a hook's action.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Run a command in the container; exit code 0 is success.
    Exec(Vec<String>),
    /// Connect to a port on localhost.
    Tcp(u16),
    /// `GET path` on a port on localhost; 200 to 399 is success.
    Http {
        /// The port.
        port: u16,
        /// The path.
        path: String,
    },
    /// Wait (the `sleep` lifecycle action).
    Sleep(Duration),
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
    /// Whether it is ready.
    pub ready: bool,
    /// How often it was restarted.
    pub restarts: u32,
    /// Whether it has become ready or failed at least once.
    pub settled: bool,
}

/// The sandbox namespaces a container runs in.
#[derive(Debug, Clone)]
pub struct Namespaces {
    /// The sandbox's network namespace.
    pub netns: Arc<Netns>,
    /// The sandbox's UTS namespace.
    pub uts: Arc<UtsNs>,
    /// The sandbox's files over the host's (`source`, `target`): its `/etc/resolv.conf`.
    pub files: Vec<(PathBuf, PathBuf)>,
}

/// Called whenever a container's status changes.
pub type OnChange = Arc<dyn Fn() + Send + Sync>;

/// A handle on a supervised container; clones share it.
#[derive(Clone)]
pub struct Container {
    status: Arc<Mutex<ContainerStatus>>,
    /// When the container must be gone: set by the first stop request, brought forward by later
    /// ones.
    stop: Arc<watch::Sender<Option<Instant>>>,
    /// Becomes true when supervision ends (the sender is dropped if it panics).
    done: watch::Receiver<bool>,
}

/// The container's status, shared with its supervisor, which reports changes.
struct Shared {
    status: Arc<Mutex<ContainerStatus>>,
    on_change: OnChange,
}

impl Shared {
    fn update(&self, change: impl FnOnce(&mut ContainerStatus)) {
        let changed = {
            let mut status = self.status.lock().expect("status lock");
            let before = status.clone();
            change(&mut status);
            *status != before
        };
        if changed {
            (self.on_change)();
        }
    }
}

impl Container {
    /// Starts supervising: the first start happens at once, in the background.
    pub fn start(spec: ContainerSpec, namespaces: Namespaces, log: PathBuf, on_change: OnChange) -> Self {
        let status = Arc::new(Mutex::new(ContainerStatus {
            name: spec.name.clone(),
            state: "Waiting".into(),
            reason: Some("ContainerCreating".into()),
            exit_code: None,
            ready: false,
            restarts: 0,
            settled: false,
        }));
        let (stop, stopping) = watch::channel(None);
        let (finished, done) = watch::channel(false);
        let shared = Shared {
            status: status.clone(),
            on_change,
        };
        tokio::spawn(async move {
            supervise(spec, namespaces, log, shared, stopping).await;
            let _ = finished.send(true);
        });
        Container {
            status,
            stop: Arc::new(stop),
            done,
        }
    }

    /// The container's current status.
    pub fn status(&self) -> ContainerStatus {
        self.status.lock().expect("status lock").clone()
    }

    /// Asks the container to stop within `grace` (preStop hook, SIGTERM, then SIGKILL),
    /// without waiting. A container already stopping keeps the earlier of the two deadlines.
    pub fn request_stop(&self, grace: Duration) {
        let deadline = Instant::now() + grace;
        self.stop.send_modify(|current| {
            *current = Some(current.map_or(deadline, |earlier| earlier.min(deadline)));
        });
    }

    /// Waits until the container has stopped (after [`request_stop`](Self::request_stop)).
    pub async fn stopped(&self) {
        let mut done = self.done.clone();
        let _ = done.wait_for(|done| *done).await;
    }
}

async fn supervise(
    spec: ContainerSpec,
    namespaces: Namespaces,
    log: PathBuf,
    shared: Shared,
    mut stop: watch::Receiver<Option<Instant>>,
) {
    let mut backoff = BACKOFF_START;
    loop {
        let exit_code = match launch(&spec.argv, &spec.env, &namespaces, Some(&log)).await {
            Err(err) => {
                append_log(&log, &format!("podnet: cannot start {:?}: {err}\n", spec.argv));
                shared.update(|s| {
                    s.state = "Waiting".into();
                    s.reason = Some("StartError".into());
                    s.settled = true;
                });
                None
            }
            Ok(mut child) => {
                shared.update(|s| {
                    s.state = "Running".into();
                    s.reason = None;
                    s.ready = spec.readiness == Readiness::Running;
                    s.settled = s.ready;
                });
                let probing = probe_readiness(&spec.readiness, &spec.env, &namespaces, &shared);
                tokio::pin!(probing);
                let exit_code = tokio::select! {
                    exit = child.wait() => exit.ok().and_then(|exit| exit.code().or(Some(128 + exit_signal(&exit)))),
                    _ = stop.wait_for(Option::is_some) => None,
                    _ = &mut probing => unreachable!("probing never finishes"),
                };
                let stopping = stop.borrow().is_some();
                if stopping {
                    // Readiness is still probed while the container stops (endpoints report a
                    // terminating pod as serving or not from it).
                    tokio::select! {
                        _ = terminate(&mut child, &mut stop, spec.pre_stop.as_ref(), &spec.env, &namespaces) => {}
                        _ = &mut probing => unreachable!("probing never finishes"),
                    }
                    shared.update(|s| {
                        s.state = "Terminated".into();
                        s.reason = Some("Completed".into());
                        s.ready = false;
                    });
                    return;
                }
                shared.update(|s| {
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
        if !spec.restart.restarts_after(exit_code) || stop.borrow().is_some() {
            return;
        }
        shared.update(|s| {
            s.state = "Waiting".into();
            s.reason = Some("CrashLoopBackOff".into());
        });
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = stop.wait_for(Option::is_some) => return,
        }
        backoff = (backoff * 2).min(BACKOFF_CAP);
        shared.update(|s| s.restarts += 1);
    }
}

/// Starts `argv` inside the sandbox's namespaces, in its own process group, its output
/// appended to `log` (or discarded).
async fn launch(
    argv: &[String],
    env: &[(String, String)],
    namespaces: &Namespaces,
    log: Option<&PathBuf>,
) -> std::io::Result<Child> {
    let output = match log {
        Some(log) => Stdio::from(OpenOptions::new().create(true).append(true).open(log)?),
        None => Stdio::null(),
    };
    let errors = match log {
        Some(log) => Stdio::from(OpenOptions::new().create(true).append(true).open(log)?),
        None => Stdio::null(),
    };
    let runtime = tokio::runtime::Handle::current();
    let (argv, env, namespaces) = (argv.to_vec(), env.to_vec(), namespaces.clone());
    tokio::task::spawn_blocking(move || {
        let view = podnet_netlink::SandboxView {
            netns: &namespaces.netns,
            uts: Some(&namespaces.uts),
            files: &namespaces.files,
        };
        podnet_netlink::netns::run_in(view, move || {
            // The child inherits this thread's namespaces; tokio must see it to reap it.
            let _context = runtime.enter();
            let (program, args) = argv.split_first().expect("validated: a program to run");
            tokio::process::Command::new(program)
                .args(args)
                .env_clear()
                .envs(env.iter().map(|(key, value)| (key, value)))
                .current_dir("/")
                .stdin(Stdio::null())
                .stdout(output)
                .stderr(errors)
                .process_group(0)
                .kill_on_drop(true)
                .spawn()
        })
        .map_err(std::io::Error::other)?
    })
    .await
    .map_err(std::io::Error::other)?
}

/// Keeps the container's readiness up to date; never returns.
async fn probe_readiness(
    readiness: &Readiness,
    env: &[(String, String)],
    namespaces: &Namespaces,
    shared: &Shared,
) {
    match readiness {
        Readiness::Running => {}
        Readiness::Listening(port) => {
            // A built-in server is ready once it listens; it stays ready while it runs.
            while !run_action(&Action::Tcp(*port), env, namespaces, Duration::from_millis(200)).await {
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
            shared.update(|s| {
                s.ready = true;
                s.settled = true;
            });
        }
        Readiness::Probe(probe) => {
            tokio::time::sleep(probe.initial_delay).await;
            let (mut successes, mut failures) = (0, 0);
            loop {
                let started = Instant::now();
                if run_action(&probe.action, env, namespaces, probe.timeout).await {
                    successes += 1;
                    failures = 0;
                    if successes >= probe.success_threshold {
                        shared.update(|s| {
                            s.ready = true;
                            s.settled = true;
                        });
                    }
                } else {
                    failures += 1;
                    successes = 0;
                    if failures >= probe.failure_threshold {
                        shared.update(|s| {
                            s.ready = false;
                            s.settled = true;
                        });
                    }
                }
                tokio::time::sleep(probe.period.saturating_sub(started.elapsed())).await;
            }
        }
    }
    std::future::pending::<()>().await;
}

/// Runs a probe's or hook's action against the container; whether it succeeded in time.
async fn run_action(
    action: &Action,
    env: &[(String, String)],
    namespaces: &Namespaces,
    timeout: Duration,
) -> bool {
    match action {
        Action::Sleep(duration) => {
            tokio::time::sleep((*duration).min(timeout)).await;
            true
        }
        Action::Exec(argv) => {
            let Ok(mut child) = launch(argv, env, namespaces, None).await else {
                return false;
            };
            match tokio::time::timeout(timeout, child.wait()).await {
                Ok(Ok(status)) => status.success(),
                _ => {
                    kill_group(&child);
                    false
                }
            }
        }
        Action::Tcp(port) | Action::Http { port, .. } => {
            let (netns, port, path) = (
                namespaces.netns.clone(),
                *port,
                match action {
                    Action::Http { path, .. } => Some(path.clone()),
                    _ => None,
                },
            );
            tokio::task::spawn_blocking(move || {
                netns
                    .run(|| check_port(port, path.as_deref(), timeout))
                    .unwrap_or(false)
            })
            .await
            .unwrap_or(false)
        }
    }
}

/// Connects to `port` on localhost; with `path`, asks for it over HTTP and checks the status.
fn check_port(port: u16, path: Option<&str>, timeout: Duration) -> bool {
    let Ok(mut stream) = std::net::TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), timeout) else {
        return false;
    };
    let Some(path) = path else { return true };
    let _ = stream.set_read_timeout(Some(timeout));
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: localhost:{port}\r\nConnection: close\r\nUser-Agent: kube-probe/1.32\r\n\r\n"
    );
    if stream.write_all(request.as_bytes()).is_err() {
        return false;
    }
    let mut head = [0u8; 12];
    if stream.read_exact(&mut head).is_err() {
        return false;
    }
    std::str::from_utf8(&head[9..12])
        .ok()
        .and_then(|code| code.parse::<u16>().ok())
        .is_some_and(|code| (200..400).contains(&code))
}

/// The preStop hook, SIGTERM to the whole process group, SIGKILL at the stop deadline.
async fn terminate(
    child: &mut Child,
    stop: &mut watch::Receiver<Option<Instant>>,
    pre_stop: Option<&Action>,
    env: &[(String, String)],
    namespaces: &Namespaces,
) {
    if let Some(hook) = pre_stop {
        let grace = deadline(stop).saturating_duration_since(Instant::now());
        tokio::select! {
            _ = run_action(hook, env, namespaces, grace) => {}
            _ = deadline_passed(stop) => {}
        }
    }
    let Some(pid) = child.id() else { return };
    let group = Pid::from_raw(pid as i32);
    let _ = killpg(group, Signal::SIGTERM);
    tokio::select! {
        _ = child.wait() => {}
        _ = deadline_passed(stop) => {
            let _ = killpg(group, Signal::SIGKILL);
            let _ = child.wait().await;
        }
    }
    // Children that left the group's leader behind still belong to the group.
    let _ = killpg(group, Signal::SIGKILL);
}

/// When the container must be gone, as last requested.
fn deadline(stop: &mut watch::Receiver<Option<Instant>>) -> Instant {
    stop.borrow_and_update().unwrap_or_else(Instant::now)
}

/// Resolves once the stop deadline has passed, following requests that bring it forward.
async fn deadline_passed(stop: &mut watch::Receiver<Option<Instant>>) {
    loop {
        let deadline = deadline(stop);
        tokio::select! {
            _ = tokio::time::sleep_until(deadline.into()) => return,
            changed = stop.changed() => if changed.is_err() {
                // Nobody can change it any more.
                tokio::time::sleep_until(deadline.into()).await;
                return;
            },
        }
    }
}

fn kill_group(child: &Child) {
    if let Some(pid) = child.id() {
        let _ = killpg(Pid::from_raw(pid as i32), Signal::SIGKILL);
    }
}

fn exit_signal(status: &std::process::ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    status.signal().unwrap_or(0)
}

fn append_log(log: &PathBuf, text: &str) {
    if let Ok(mut file) = OpenOptions::new().create(true).append(true).open(log) {
        let _ = file.write_all(text.as_bytes());
    }
}
