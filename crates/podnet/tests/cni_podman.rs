//! A real container runtime drives podnet's plugins: podman 4.3 with its CNI backend runs two
//! busybox containers on a podnet network, inside a node namespace of the test's own.

mod support;

use std::path::Path;
use std::process::Command;

use support::*;

const NETWORK: &str = "podnete2e";

struct Podman {
    node: TestNetns,
    dir: TestDir,
    _bin: CniBin,
}

impl Podman {
    fn new() -> Self {
        let node = TestNetns::new("pmnode");
        node.exec_ok("ip", &["link", "set", "lo", "up"]);
        let bin = CniBin::new();
        let dir = TestDir::new("podman");
        let base = dir.path.display().to_string();
        std::fs::create_dir_all(dir.join("net.d")).unwrap();
        std::fs::write(
            dir.join("containers.conf"),
            format!(
                r#"[network]
network_backend = "cni"
cni_plugin_dirs = ["{bin}"]
network_config_dir = "{base}/net.d"
default_network = "{NETWORK}"

[engine]
cgroup_manager = "cgroupfs"
events_logger = "file"
events_logfile_path = "{base}/events.log"
runtime = "runc"
lock_type = "file"
tmp_dir = "{base}/tmp"
volume_path = "{base}/volumes"
"#,
                bin = bin.dir.path.display()
            ),
        )
        .unwrap();
        std::fs::write(
            dir.join("storage.conf"),
            format!(
                "[storage]\ndriver = \"vfs\"\ngraphroot = \"{base}/root\"\nrunroot = \"{base}/runroot\"\n"
            ),
        )
        .unwrap();
        let conflist = serde_json::json!({
            "cniVersion": "1.0.0",
            "name": NETWORK,
            "plugins": [
                {
                    "type": "bridge", "bridge": "pnpod0", "isGateway": true, "ipMasq": true,
                    "hairpinMode": true, "stateDir": dir.join("state"),
                    "ipam": {"type": "host-local", "routes": [{"dst": "0.0.0.0/0"}],
                             "ranges": [[{"subnet": "10.88.20.0/24"}]], "dataDir": dir.join("ipam")}
                },
                {"type": "portmap", "capabilities": {"portMappings": true}, "stateDir": dir.join("state")}
            ]
        });
        std::fs::write(
            dir.join(&format!("net.d/{NETWORK}.conflist")),
            conflist.to_string(),
        )
        .unwrap();
        for container in ["web", "client"] {
            let rootfs = dir.join(&format!("rootfs-{container}"));
            for sub in ["bin", "etc", "proc", "sys", "dev", "tmp", "run", "www", "root"] {
                std::fs::create_dir_all(rootfs.join(sub)).unwrap();
            }
            std::fs::copy("/bin/busybox", rootfs.join("bin/busybox")).expect("busybox-static is installed");
            for applet in ["sh", "httpd", "sleep", "ping", "wget", "ip"] {
                std::os::unix::fs::symlink("busybox", rootfs.join("bin").join(applet)).unwrap();
            }
            std::fs::write(rootfs.join("www/index.html"), format!("hello from {container}\n")).unwrap();
            std::fs::write(rootfs.join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\n").unwrap();
        }
        Podman { node, dir, _bin: bin }
    }

    /// Runs podman inside the node namespace (nsenter, not `ip netns exec`: runc needs /sys).
    fn podman(&self, args: &[&str]) -> String {
        let output = Command::new("nsenter")
            .arg(format!("--net={}", self.node.path().display()))
            .arg("podman")
            .args(args)
            .env("CONTAINERS_CONF", self.dir.join("containers.conf"))
            .env("CONTAINERS_STORAGE_CONF", self.dir.join("storage.conf"))
            .current_dir(&self.dir.path)
            .output()
            .expect("podman is installed");
        assert!(
            output.status.success(),
            "podman {args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).trim().to_owned()
    }

    fn run(&self, name: &str, extra: &[&str], command: &[&str]) {
        let rootfs = self.dir.join(&format!("rootfs-{name}"));
        let mut args = vec!["run", "-d", "--name", name, "--network", NETWORK];
        args.extend_from_slice(extra);
        args.extend_from_slice(&[
            "--runtime",
            "runc",
            "--ulimit",
            "nofile=20000:20000",
            "--ulimit",
            "nproc=1000:1000",
            "--rootfs",
            rootfs.to_str().unwrap(),
        ]);
        args.extend_from_slice(command);
        self.podman(&args);
    }

    fn ip(&self, name: &str) -> String {
        self.podman(&[
            "inspect",
            "-f",
            &format!("{{{{.NetworkSettings.Networks.{NETWORK}.IPAddress}}}}"),
            name,
        ])
    }
}

impl Drop for Podman {
    fn drop(&mut self) {
        let _ = Command::new("nsenter")
            .arg(format!("--net={}", self.node.path().display()))
            .args(["podman", "rm", "-f", "-t", "0", "--all"])
            .env("CONTAINERS_CONF", self.dir.join("containers.conf"))
            .env("CONTAINERS_STORAGE_CONF", self.dir.join("storage.conf"))
            .output();
    }
}

#[test]
fn podman_runs_containers_on_a_podnet_network() {
    let cache_existed = Path::new("/var/lib/cni").exists();
    let podman = Podman::new();
    podman.run(
        "web",
        &["-p", "18080:80"],
        &["/bin/httpd", "-f", "-p", "80", "-h", "/www"],
    );
    podman.run("client", &[], &["/bin/sleep", "600"]);
    let (web, client) = (podman.ip("web"), podman.ip("client"));
    assert!(
        web.starts_with("10.88.20.") && client.starts_with("10.88.20."),
        "{web} {client}"
    );
    assert_ne!(web, client);

    podman.podman(&["exec", "client", "ping", "-c1", "-W2", &web]);
    podman.podman(&["exec", "web", "ping", "-c1", "-W2", &client]);
    let page = podman.podman(&["exec", "client", "wget", "-qO-", &format!("http://{web}/")]);
    assert_eq!(page, "hello from web");
    // The published port, from the node itself and from the other container.
    for url in ["http://10.88.20.1:18080/", "http://127.0.0.1:18080/"] {
        assert_eq!(
            eventually(5, || http_get(&podman.node, url)).as_deref(),
            Some("hello from web\n"),
            "{url}"
        );
    }
    let via_host_port = podman.podman(&["exec", "client", "wget", "-qO-", "http://10.88.20.1:18080/"]);
    assert_eq!(via_host_port, "hello from web");

    // Removing the containers runs DEL: addresses, records and forwards are gone.
    podman.podman(&["rm", "-f", "-t", "0", "web", "client"]);
    let addresses: Vec<String> = files_below(&podman.dir.join("ipam"))
        .into_iter()
        .filter(|name| {
            name.rsplit('/')
                .next()
                .unwrap()
                .parse::<std::net::IpAddr>()
                .is_ok()
        })
        .collect();
    assert!(addresses.is_empty(), "{addresses:?}");
    let records = || -> Vec<String> {
        files_below(&podman.dir.join("state"))
            .into_iter()
            .filter(|name| name.ends_with(".json"))
            .collect()
    };
    assert!(
        eventually(5, || records().is_empty().then_some(())).is_some(),
        "{:?}",
        records()
    );
    assert_eq!(http_get(&podman.node, "http://10.88.20.1:18080/"), None);
    drop(podman);
    if !cache_existed {
        // libcni keeps a result cache here; remove what this test created.
        let _ = std::fs::remove_dir_all("/var/lib/cni");
    }
}
