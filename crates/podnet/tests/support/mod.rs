//! Shared helpers for podnet's root tests: uniquely named namespaces and directories that are
//! removed even when a test fails, and a way to run CNI plugins the way a runtime does.
#![allow(dead_code)] // Each test binary uses a different subset.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};

/// The podnet binary under test.
pub fn podnet() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_podnet"))
}

/// Fails loudly (instead of silently passing) when not run as root.
pub fn require_root() {
    let uid = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|line| line.strip_prefix("Uid:"))
                .and_then(|ids| ids.split_whitespace().nth(1).map(str::to_owned))
        })
        .unwrap_or_default();
    assert_eq!(
        uid, "0",
        "this test creates network namespaces and must run as root (see .ci/run)"
    );
}

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// A name unique to this test process and call: `pnt-<tag>-<pid>-<n>`.
pub fn unique(tag: &str) -> String {
    format!(
        "pnt-{tag}-{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// A network namespace created for one test and deleted (with every process inside) on drop.
pub struct TestNetns {
    pub name: String,
}

impl TestNetns {
    pub fn new(tag: &str) -> Self {
        require_root();
        let name = unique(tag);
        run_ok("ip", &["netns", "add", &name]);
        TestNetns { name }
    }

    pub fn path(&self) -> PathBuf {
        PathBuf::from("/run/netns").join(&self.name)
    }

    /// Runs a command inside the namespace (through nsenter, which leaves /sys alone).
    pub fn exec(&self, program: &str, args: &[&str]) -> Output {
        let netns = format!("--net={}", self.path().display());
        let mut full = vec![netns.as_str(), program];
        full.extend_from_slice(args);
        Command::new("nsenter")
            .args(&full)
            .output()
            .expect("nsenter runs")
    }

    /// Like [`exec`](Self::exec), asserting success and returning stdout.
    pub fn exec_ok(&self, program: &str, args: &[&str]) -> String {
        let output = self.exec(program, args);
        assert!(
            output.status.success(),
            "{program} {args:?} in {} failed: {}{}",
            self.name,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// Deletes the namespace now (as when a container goes away before its DEL).
    pub fn delete(&self) {
        kill_processes_in(&self.path());
        let _ = Command::new("ip").args(["netns", "delete", &self.name]).status();
    }
}

impl Drop for TestNetns {
    fn drop(&mut self) {
        self.delete();
    }
}

/// Kills every process whose network namespace is the one pinned at `path`.
fn kill_processes_in(path: &Path) {
    let Ok(output) = Command::new("ip")
        .args(["netns", "pids", path.file_name().unwrap().to_str().unwrap()])
        .output()
    else {
        return;
    };
    for pid in String::from_utf8_lossy(&output.stdout).split_whitespace() {
        let _ = Command::new("kill").args(["-9", pid]).status();
    }
}

/// A directory removed on drop.
pub struct TestDir {
    pub path: PathBuf,
}

impl TestDir {
    pub fn new(tag: &str) -> Self {
        let path = std::env::temp_dir().join(unique(tag));
        std::fs::create_dir_all(&path).unwrap();
        TestDir { path }
    }

    pub fn join(&self, part: &str) -> PathBuf {
        self.path.join(part)
    }
}

impl Drop for TestDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// Runs a command on the host, asserting success.
pub fn run_ok(program: &str, args: &[&str]) -> String {
    let output = Command::new(program).args(args).output().expect("command runs");
    assert!(
        output.status.success(),
        "{program} {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// A CNI bin directory holding podnet's plugins, as `podnet cni install` makes it.
pub struct CniBin {
    pub dir: TestDir,
}

impl CniBin {
    pub fn new() -> Self {
        let dir = TestDir::new("cnibin");
        let output = Command::new(podnet())
            .args(["cni", "install", "--dir"])
            .arg(&dir.path)
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        CniBin { dir }
    }

    pub fn plugin(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
}

/// What a plugin printed and how it exited.
#[derive(Debug)]
pub struct PluginOutput {
    pub success: bool,
    pub stdout: String,
    pub stderr: String,
}

impl PluginOutput {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|err| panic!("not JSON ({err}): {self:?}"))
    }

    /// Asserts success and returns the JSON answer (Null for an empty answer).
    pub fn ok(&self) -> serde_json::Value {
        assert!(self.success, "plugin failed: {self:?}");
        if self.stdout.trim().is_empty() {
            serde_json::Value::Null
        } else {
            self.json()
        }
    }

    /// Asserts failure and returns the error object.
    pub fn err(&self) -> serde_json::Value {
        assert!(!self.success, "plugin unexpectedly succeeded: {self:?}");
        self.json()
    }
}

/// One plugin invocation: the CNI environment, run inside `node`'s namespace.
pub struct Invocation<'a> {
    pub node: &'a TestNetns,
    pub plugin: PathBuf,
    pub env: Vec<(String, String)>,
}

impl<'a> Invocation<'a> {
    pub fn new(node: &'a TestNetns, bin: &CniBin, plugin: &str, command: &str) -> Self {
        Invocation {
            node,
            plugin: bin.plugin(plugin),
            env: vec![
                ("CNI_COMMAND".into(), command.into()),
                ("CNI_PATH".into(), bin.dir.path.display().to_string()),
            ],
        }
    }

    /// Sets the attachment: container ID, namespace and interface name.
    pub fn attachment(mut self, container_id: &str, netns: Option<&TestNetns>, ifname: &str) -> Self {
        self.env.push(("CNI_CONTAINERID".into(), container_id.into()));
        self.env.push(("CNI_IFNAME".into(), ifname.into()));
        if let Some(netns) = netns {
            self.env
                .push(("CNI_NETNS".into(), netns.path().display().to_string()));
        }
        self
    }

    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.retain(|(k, _)| k != key);
        self.env.push((key.into(), value.into()));
        self
    }

    pub fn without(mut self, key: &str) -> Self {
        self.env.retain(|(k, _)| k != key);
        self
    }

    pub fn run(&self, stdin: &str) -> PluginOutput {
        let netns = format!("--net={}", self.node.path().display());
        let mut child = Command::new("nsenter")
            .arg(netns)
            .arg(&self.plugin)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("plugin starts");
        child.stdin.take().unwrap().write_all(stdin.as_bytes()).unwrap();
        let output = child.wait_with_output().unwrap();
        PluginOutput {
            success: output.status.success(),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }
}

/// A snapshot of a namespace's kernel state (links, addresses, routes, nftables) for checking
/// that a refused command changed nothing.
pub fn kernel_state(netns: &TestNetns) -> String {
    let mut state = String::new();
    for (program, args) in [
        ("ip", &["-o", "link", "show"][..]),
        ("ip", &["-o", "addr", "show"][..]),
        ("ip", &["route", "show", "table", "all"][..]),
        ("nft", &["list", "ruleset"][..]),
    ] {
        let output = netns.exec(program, args);
        state.push_str(&String::from_utf8_lossy(&output.stdout));
    }
    // Interface counters and timers change on their own; keep only names and flags.
    state
        .lines()
        .map(|line| line.split(" qlen").next().unwrap_or(line))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Every file below `dir`, relative, sorted.
pub fn files_below(dir: &Path) -> Vec<String> {
    let mut files = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(current) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&current) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else {
                files.push(path.strip_prefix(dir).unwrap().display().to_string());
            }
        }
    }
    files.sort();
    files
}

/// A process running in the background for the length of a test, killed on drop.
pub struct Background {
    child: std::process::Child,
}

impl Background {
    /// Starts `program args` inside `netns`.
    pub fn start_in(netns: &TestNetns, program: &str, args: &[&str]) -> Self {
        Self::start_in_named(&netns.name, program, args)
    }

    /// Starts `program args` inside the named namespace (one a lab created, for instance).
    pub fn start_in_named(netns: &str, program: &str, args: &[&str]) -> Self {
        let child = Command::new("nsenter")
            .arg(format!("--net=/run/netns/{netns}"))
            .arg(program)
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("background process starts");
        Background { child }
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Retries `probe` for up to `seconds`, returning its last answer.
pub fn eventually<T>(seconds: u64, mut probe: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(seconds);
    loop {
        if let Some(value) = probe() {
            return Some(value);
        }
        if std::time::Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// An HTTP GET from inside `netns` with curl; the body, or None on failure.
pub fn http_get(netns: &TestNetns, url: &str) -> Option<String> {
    let output = netns.exec("curl", &["-sS", "--max-time", "2", url]);
    output
        .status
        .success()
        .then(|| String::from_utf8_lossy(&output.stdout).into_owned())
}

/// A lab started from a file (renamed to be unique to the test), removed on drop.
pub struct Lab {
    pub name: String,
    dir: TestDir,
}

impl Lab {
    /// Starts `text` (a lab file whose Lab is named `NAME`) under a unique name.
    pub fn up(text: &str) -> Self {
        let lab = Self::prepare(text);
        let output = lab.podnet(&["lab", "up", lab.file().to_str().unwrap()]);
        assert!(
            output.status.success(),
            "lab up failed:\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
        lab
    }

    /// Writes the file without starting the lab.
    pub fn prepare(text: &str) -> Self {
        require_root();
        let name = format!("t{}", &unique("lab").replace('-', "")[3..]);
        let dir = TestDir::new("labfile");
        std::fs::write(dir.join("lab.yaml"), text.replace("NAME", &name)).unwrap();
        Lab { name, dir }
    }

    pub fn file(&self) -> std::path::PathBuf {
        self.dir.join("lab.yaml")
    }

    pub fn podnet(&self, args: &[&str]) -> Output {
        Command::new(podnet()).args(args).output().expect("podnet runs")
    }

    /// `podnet lab exec --lab NAME POD [-c C] -- ARGS`, asserting success.
    pub fn exec(&self, pod: &str, container: Option<&str>, args: &[&str]) -> String {
        let output = self.exec_output(pod, container, args);
        assert!(
            output.status.success(),
            "exec in {pod} failed: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    pub fn exec_output(&self, pod: &str, container: Option<&str>, args: &[&str]) -> Output {
        let mut full = vec!["lab", "exec", "--lab", &self.name, pod];
        if let Some(container) = container {
            full.extend(["-c", container]);
        }
        full.push("--");
        full.extend_from_slice(args);
        self.podnet(&full)
    }

    /// `podnet lab exec --lab NAME -n NAMESPACE POD -- ARGS`, whatever its outcome.
    pub fn exec_in(&self, namespace: &str, pod: &str, args: &[&str]) -> Output {
        let mut full = vec!["lab", "exec", "--lab", &self.name, "-n", namespace, pod, "--"];
        full.extend_from_slice(args);
        self.podnet(&full)
    }

    /// The IP of pod NAMESPACE/POD, from `lab status`.
    pub fn pod_ip_in(&self, namespace: &str, pod: &str) -> String {
        let status = self.status();
        status
            .lines()
            .map(|line| line.split_whitespace().collect::<Vec<_>>())
            .find(|columns| columns.first() == Some(&namespace) && columns.get(1) == Some(&pod))
            .and_then(|columns| columns.get(5).map(|ip| (*ip).to_owned()))
            .unwrap_or_else(|| panic!("pod {namespace}/{pod} not in\n{status}"))
    }

    pub fn status(&self) -> String {
        let output = self.podnet(&["lab", "status", "--lab", &self.name]);
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// The IP of a pod, from `lab status`.
    pub fn pod_ip(&self, pod: &str) -> String {
        self.status()
            .lines()
            .find(|line| line.split_whitespace().nth(1) == Some(pod))
            .and_then(|line| line.split_whitespace().nth(5))
            .unwrap_or_else(|| panic!("pod {pod} not in\n{}", self.status()))
            .to_owned()
    }

    /// Runs a command in one of the lab's namespaces (`node1`, `external`, ...), asserting success.
    pub fn netns_exec(&self, netns: &str, args: &[&str]) -> String {
        let name = format!("{}_{netns}", self.name);
        let mut full = vec!["netns", "exec", name.as_str()];
        full.extend_from_slice(args);
        run_ok("ip", &full)
    }

    /// `podnet lab get KIND [NAME]` as JSON: a `List` of objects.
    pub fn get(&self, kind: &str, name: Option<&str>) -> serde_json::Value {
        let mut args = vec!["lab", "get", "--lab", &self.name, kind];
        args.extend(name);
        let output = self.podnet(&args);
        assert!(
            output.status.success(),
            "lab get {kind}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        serde_json::from_slice(&output.stdout).expect("lab get prints JSON")
    }

    /// A service's ClusterIP.
    pub fn service_ip(&self, service: &str) -> String {
        let list = self.get("services", Some(service));
        list["items"][0]["spec"]["clusterIP"]
            .as_str()
            .unwrap_or_else(|| panic!("no clusterIP: {list}"))
            .to_owned()
    }

    /// `podnet lab apply` of `text`, expecting a refusal; returns the error.
    pub fn apply_refused(&self, text: &str) -> String {
        std::fs::write(self.file(), text.replace("NAME", &self.name)).unwrap();
        let output = self.podnet(&["lab", "apply", self.file().to_str().unwrap()]);
        assert!(!output.status.success(), "apply accepted:\n{text}");
        String::from_utf8_lossy(&output.stderr).into_owned()
    }

    /// The status line of a pod.
    pub fn pod_line(&self, pod: &str) -> String {
        self.status()
            .lines()
            .find(|line| line.split_whitespace().nth(1) == Some(pod))
            .unwrap_or_default()
            .to_owned()
    }

    /// `podnet lab apply` of `text` (with the lab's name), asserting success.
    pub fn apply(&self, text: &str) -> String {
        std::fs::write(self.file(), text.replace("NAME", &self.name)).unwrap();
        let output = self.podnet(&["lab", "apply", self.file().to_str().unwrap()]);
        assert!(
            output.status.success(),
            "apply failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    pub fn down(&self) -> Output {
        self.podnet(&["lab", "down", "--lab", &self.name])
    }

    /// Asserts that nothing of the lab is left: namespaces, state, processes.
    pub fn assert_gone(&self) {
        let netns = run_ok("ip", &["netns", "list"]);
        assert!(
            !netns.contains(&format!("{}_", self.name)),
            "namespaces left:\n{netns}"
        );
        assert!(
            !Path::new("/run/podnet/labs").join(&self.name).exists(),
            "state left"
        );
        let processes = run_ok("ps", &["-eo", "args"]);
        assert!(
            !processes.contains(&format!("lab daemon {}", self.name)),
            "daemon left:\n{processes}"
        );
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        let _ = self.down();
    }
}
