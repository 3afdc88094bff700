//! The `podnet lab` commands: start a lab's daemon and talk to it.

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nix::sched::{CloneFlags, setns};
use nix::sys::socket::{getsockopt, sockopt};
use nix::unistd::Pid;

use crate::failures::Failures;
use crate::paths::{LABS_DIR, LabPaths};
use crate::protocol::{self, LabStatus, Request, Response};
use crate::{daemon, reaper, spec};

/// How long `lab down` waits for the daemon to finish before sweeping on its own.
const DOWN_TIMEOUT: Duration = Duration::from_secs(30);

/// A failed lab command, with what to do about it.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The lab file is invalid; nothing was created.
    #[error("{path}: {error}")]
    File {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        error: String,
    },
    /// No such lab, or no lab at all.
    #[error("{0}")]
    NoLab(String),
    /// The command line asks for something impossible.
    #[error("{0}")]
    Usage(String),
    /// Several labs are up and the command did not say which one.
    #[error("several labs are up ({}); choose one with --lab NAME", .0.join(", "))]
    Ambiguous(Vec<String>),
    /// The lab exists already.
    #[error(
        "lab {0:?} is already up: change it with `podnet lab apply FILE`, or remove it with `podnet lab down`"
    )]
    AlreadyUp(String),
    /// The daemon reported a failure.
    #[error("{0}")]
    Daemon(String),
    /// Local I/O failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The failure.
        #[source]
        source: std::io::Error,
    },
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> ClientError {
    let what = what.into();
    move |source| ClientError::Io { what, source }
}

/// Brings up the lab described in `file` and returns once it is ready; `progress` receives
/// the daemon's progress lines. Nothing is left behind if it fails.
pub fn up(file: &Path, progress: impl Fn(&str)) -> Result<LabStatus, ClientError> {
    let (text, parsed) = read_file(file)?;
    let paths = LabPaths::new(&parsed.spec.name);
    if is_running(&paths) {
        return Err(ClientError::AlreadyUp(parsed.spec.name));
    }
    // Leftovers of a lab whose daemon died: remove them first.
    let leftovers = reaper::sweep(&paths);
    if !leftovers.is_empty() {
        return Err(ClientError::Daemon(format!(
            "cannot clear an earlier lab of that name: {leftovers}"
        )));
    }
    let start = || -> Result<std::process::Child, ClientError> {
        std::fs::create_dir_all(paths.root()).map_err(io(format!("create {}", paths.root().display())))?;
        std::fs::write(daemon::lab_file(&paths), &text).map_err(io("copy the lab file"))?;
        let log = File::create(paths.daemon_log()).map_err(io("create the daemon log"))?;
        let executable = std::env::current_exe().map_err(io("locate the podnet executable"))?;
        Command::new(executable)
            .args(["lab", "daemon", &parsed.spec.name])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log))
            .process_group(0)
            .spawn()
            .map_err(io("start the lab daemon"))
    };
    let mut daemon = start().inspect_err(|_| {
        reaper::sweep(&paths);
    })?;
    let reports = BufReader::new(daemon.stdout.take().expect("piped"));
    let mut failure = None;
    for line in reports.lines() {
        let line = line.unwrap_or_default();
        if line == "ready" {
            return status(Some(&parsed.spec.name));
        } else if let Some(text) = line.strip_prefix("progress ") {
            progress(text);
        } else if let Some(text) = line.strip_prefix("error ") {
            failure = Some(text.to_owned());
        }
    }
    let _ = daemon.wait();
    let log_tail = std::fs::read_to_string(paths.daemon_log()).unwrap_or_default();
    let leftovers = reaper::sweep(&paths);
    let mut message = failure
        .unwrap_or_else(|| format!("the lab daemon exited before the lab was ready; its log:\n{log_tail}"));
    if !leftovers.is_empty() {
        message.push_str(&format!("\ncleanup incomplete: {leftovers}"));
    }
    Err(ClientError::Daemon(message))
}

/// Changes a running lab to match `file`; returns what changed.
pub fn apply(file: &Path) -> Result<Vec<String>, ClientError> {
    let (text, parsed) = read_file(file)?;
    let paths = LabPaths::new(&parsed.spec.name);
    if !is_running(&paths) {
        return Err(ClientError::NoLab(format!(
            "lab {:?} is not up; start it with `podnet lab up {}`",
            parsed.spec.name,
            file.display()
        )));
    }
    match ask(&paths, &Request::Apply { file: text })? {
        Response::Applied(changes) => Ok(changes),
        other => Err(unexpected(other)),
    }
}

/// Tears a lab down completely; succeeds (with nothing to do) when it is not up.
pub fn down(name: Option<&str>) -> Result<Option<String>, ClientError> {
    let paths = match find(name) {
        Ok(paths) => paths,
        Err(ClientError::NoLab(_)) => return Ok(None),
        Err(err) => return Err(err),
    };
    let mut problems = Failures::new();
    if let Some(daemon) = daemon_pid(&paths) {
        match ask(&paths, &Request::Down) {
            Ok(Response::Ok) => {}
            Ok(Response::Error(message)) => problems.push(message),
            Ok(_) => {}
            Err(err) => problems.push(err),
        }
        wait_exited(daemon);
    }
    // Whatever the daemon did or did not do, nothing of the lab may remain.
    problems.extend(reaper::sweep(&paths));
    if problems.is_empty() {
        Ok(Some(paths.name().to_owned()))
    } else {
        Err(ClientError::Daemon(format!("lab {}: {problems}", paths.name())))
    }
}

/// The objects of `kind` (in `namespace`, named `name`, when given) as a Kubernetes `List`.
pub fn get(
    lab: Option<&str>,
    kind: podnet_model::Kind,
    namespace: Option<&str>,
    name: Option<&str>,
) -> Result<serde_json::Value, ClientError> {
    let paths = find(lab)?;
    let request = Request::Get {
        kind,
        namespace: namespace.map(str::to_owned),
        name: name.map(str::to_owned),
    };
    match ask(&paths, &request)? {
        Response::Objects(objects) => {
            let items: Vec<serde_json::Value> = objects
                .iter()
                .map(|object| match object {
                    podnet_model::Object::Node(node) => serde_json::to_value(node),
                    podnet_model::Object::Namespace(namespace) => serde_json::to_value(namespace),
                    podnet_model::Object::Pod(pod) => serde_json::to_value(pod),
                    podnet_model::Object::Service(service) => serde_json::to_value(service),
                    podnet_model::Object::EndpointSlice(slice) => serde_json::to_value(slice),
                    podnet_model::Object::NetworkPolicy(policy) => serde_json::to_value(policy),
                })
                .collect::<Result<_, _>>()
                .expect("objects serialize");
            Ok(serde_json::json!({"apiVersion": "v1", "kind": "List", "items": items}))
        }
        other => Err(unexpected(other)),
    }
}

/// The nodes and pods of a lab.
pub fn status(name: Option<&str>) -> Result<LabStatus, ClientError> {
    let paths = find(name)?;
    match ask(&paths, &Request::Status)? {
        Response::Status(status) => Ok(status),
        other => Err(unexpected(other)),
    }
}

/// Replaces this process with `argv` running in a pod's container: its network and UTS
/// namespaces, its files (resolv.conf) and its environment. Returns only on failure.
pub fn exec(
    name: Option<&str>,
    namespace: &str,
    pod: &str,
    container: Option<&str>,
    argv: &[String],
) -> ClientError {
    let run = || -> Result<ClientError, ClientError> {
        let paths = find(name)?;
        let request = Request::Exec {
            namespace: namespace.to_owned(),
            pod: pod.to_owned(),
            container: container.map(str::to_owned),
        };
        let target = match ask(&paths, &request)? {
            Response::Exec(target) => target,
            other => return Err(unexpected(other)),
        };
        let netns = File::open(&target.netns).map_err(io(format!("open {}", target.netns)))?;
        let uts = File::open(&target.uts).map_err(io(format!("open {}", target.uts)))?;
        setns(&netns, CloneFlags::CLONE_NEWNET).map_err(|err| ClientError::Io {
            what: "enter the pod's network namespace".into(),
            source: err.into(),
        })?;
        setns(&uts, CloneFlags::CLONE_NEWUTS).map_err(|err| ClientError::Io {
            what: "enter the pod's UTS namespace".into(),
            source: err.into(),
        })?;
        podnet_netlink::netns::bind_files(&target.files).map_err(|err| ClientError::Io {
            what: "see the pod's files (its resolv.conf)".into(),
            source: std::io::Error::other(err.to_string()),
        })?;
        let (program, args) = argv
            .split_first()
            .ok_or_else(|| ClientError::Usage("no command given: podnet lab exec POD -- COMMAND".into()))?;
        let err = Command::new(program)
            .args(args)
            .env_clear()
            .envs(target.env)
            .exec();
        Ok(ClientError::Io {
            what: format!("run {program}"),
            source: err,
        })
    };
    run().unwrap_or_else(|err| err)
}

/// The log of a pod's container.
pub fn log_path(
    name: Option<&str>,
    namespace: &str,
    pod: &str,
    container: Option<&str>,
) -> Result<PathBuf, ClientError> {
    let paths = find(name)?;
    let state = status(Some(paths.name()))?;
    let found = state
        .pods
        .iter()
        .find(|row| row.namespace == namespace && row.name == pod)
        .ok_or_else(|| {
            ClientError::NoLab(format!("pod {namespace}/{pod} not found in lab {}", paths.name()))
        })?;
    let container = match container {
        Some(name) => name.to_owned(),
        None => found
            .containers
            .first()
            .map(|c| c.name.clone())
            .unwrap_or_default(),
    };
    let key = podnet_model::ObjectKey {
        namespace: namespace.to_owned(),
        name: pod.to_owned(),
    };
    Ok(paths.pod_dir(&key).join(format!("{container}.log")))
}

/// The names of every lab with state on this host.
pub fn labs() -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(LABS_DIR)
        .map(|entries| {
            entries
                .flatten()
                .filter_map(|entry| entry.file_name().to_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

/// The lab named `name`, or the only lab when no name is given.
fn find(name: Option<&str>) -> Result<LabPaths, ClientError> {
    if let Some(name) = name {
        // The name becomes a path below LABS_DIR: refuse anything that is not a lab name.
        spec::check_name(name, spec::MAX_LAB_NAME)
            .map_err(|message| ClientError::Usage(format!("--lab: {message}")))?;
        let paths = LabPaths::new(name);
        return if paths.root().exists() {
            Ok(paths)
        } else {
            Err(ClientError::NoLab(format!("no lab named {name:?} is up")))
        };
    }
    match labs().as_slice() {
        [] => Err(ClientError::NoLab(
            "no lab is up; start one with `podnet lab up FILE`".into(),
        )),
        [only] => Ok(LabPaths::new(only)),
        many => Err(ClientError::Ambiguous(many.to_vec())),
    }
}

fn is_running(paths: &LabPaths) -> bool {
    std::os::unix::net::UnixStream::connect(paths.socket()).is_ok()
}

/// The process serving the lab's socket, from the kernel's record of the peer (SO_PEERCRED).
fn daemon_pid(paths: &LabPaths) -> Option<Pid> {
    let stream = std::os::unix::net::UnixStream::connect(paths.socket()).ok()?;
    let credentials = getsockopt(&stream, sockopt::PeerCredentials).ok()?;
    Some(Pid::from_raw(credentials.pid()))
}

/// Waits until `pid` has exited (a zombie counts as exited): the daemon closes its socket before
/// its runtime has shut down, so the socket alone does not say the process is gone.
fn wait_exited(pid: Pid) {
    let stat = PathBuf::from(format!("/proc/{pid}/stat"));
    let alive = || {
        std::fs::read_to_string(&stat).is_ok_and(|line| {
            line.rsplit_once(") ")
                .is_some_and(|(_, rest)| !rest.starts_with('Z'))
        })
    };
    let deadline = Instant::now() + DOWN_TIMEOUT;
    while alive() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn ask(paths: &LabPaths, request: &Request) -> Result<Response, ClientError> {
    match protocol::call(&paths.socket(), request) {
        Ok(Response::Error(message)) => Err(ClientError::Daemon(message)),
        Ok(response) => Ok(response),
        Err(err) => Err(ClientError::NoLab(format!(
            "lab {:?} does not answer ({err}); its daemon may have died: `podnet lab down --lab {}` cleans up",
            paths.name(),
            paths.name()
        ))),
    }
}

fn unexpected(response: Response) -> ClientError {
    ClientError::Daemon(format!("unexpected answer from the lab daemon: {response:?}"))
}

/// A lab file's text and its parsed, validated content.
fn read_file(file: &Path) -> Result<(String, spec::LabFile), ClientError> {
    let refused = |error: String| ClientError::File {
        path: file.to_owned(),
        error,
    };
    let text = std::fs::read_to_string(file).map_err(|err| refused(err.to_string()))?;
    let parsed = spec::parse(&text).map_err(|err| refused(err.to_string()))?;
    Ok((text, parsed))
}

/// `podnet lab status` as text: a node table and a pod table, like `kubectl get -o wide`.
pub fn format_status(status: &LabStatus) -> String {
    let mut rows = vec![vec![
        "NODE".to_owned(),
        "INTERNAL-IP".into(),
        "POD-CIDR".into(),
        "BACKEND".into(),
        "NETNS".into(),
    ]];
    rows.extend(status.nodes.iter().map(|node| {
        vec![
            node.name.clone(),
            node.address.clone(),
            node.pod_cidr.clone(),
            status.backend.clone(),
            node.netns.clone(),
        ]
    }));
    let mut text = format!(
        "lab {} (pod CIDR {}, {})\n\n",
        status.name, status.pod_cidr, status.backend
    );
    text.push_str(&table(&rows));
    let mut rows = vec![vec![
        "NAMESPACE".to_owned(),
        "NAME".into(),
        "READY".into(),
        "STATUS".into(),
        "RESTARTS".into(),
        "IP".into(),
        "NODE".into(),
    ]];
    for pod in &status.pods {
        let ready = pod.containers.iter().filter(|c| c.ready).count();
        let restarts: u32 = pod.containers.iter().map(|c| c.restarts).sum();
        rows.push(vec![
            pod.namespace.clone(),
            pod.name.clone(),
            format!("{ready}/{}", pod.containers.len()),
            pod.phase.clone(),
            restarts.to_string(),
            if pod.ips.is_empty() {
                "<none>".into()
            } else {
                pod.ips.join(",")
            },
            pod.node.clone(),
        ]);
    }
    text.push('\n');
    text.push_str(&table(&rows));
    if !status.services.is_empty() {
        let mut rows = vec![vec![
            "NAMESPACE".to_owned(),
            "NAME".into(),
            "TYPE".into(),
            "CLUSTER-IP".into(),
            "EXTERNAL-IP".into(),
            "PORT(S)".into(),
        ]];
        rows.extend(status.services.iter().map(|service| {
            vec![
                service.namespace.clone(),
                service.name.clone(),
                service.kind.clone(),
                service.cluster_ip.clone(),
                service.external.clone(),
                service.ports.clone(),
            ]
        }));
        text.push('\n');
        text.push_str(&table(&rows));
    }
    for pod in status.pods.iter().filter(|pod| pod.message.is_some()) {
        text.push_str(&format!(
            "\n{}/{}: {}\n",
            pod.namespace,
            pod.name,
            pod.message.as_deref().unwrap_or_default()
        ));
    }
    text
}

fn table(rows: &[Vec<String>]) -> String {
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..columns)
        .map(|column| {
            rows.iter()
                .map(|row| row.get(column).map_or(0, String::len))
                .max()
                .unwrap_or(0)
        })
        .collect();
    rows.iter()
        .map(|row| {
            row.iter()
                .enumerate()
                .map(|(column, cell)| format!("{cell:<width$}", width = widths[column]))
                .collect::<Vec<_>>()
                .join("   ")
                .trim_end()
                .to_owned()
                + "\n"
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lab_name_that_is_not_a_name_is_refused_before_touching_anything() {
        for name in ["../..", "..", "", "a/b"] {
            assert!(
                matches!(down(Some(name)), Err(ClientError::Usage(message)) if message.starts_with("--lab: ")),
                "{name:?}"
            );
        }
    }
}
