//! What runs in a lab container: no images can be pulled here, so well-known images map to
//! programs built into podnet, and any other image runs its `command` from the host.
//!
//! | image | program |
//! |---|---|
//! | `traefik/whoami` | an HTTP server answering with its hostname, IPs and the request |
//! | `nginx` | an HTTP server with nginx's welcome page on port 80 |
//! | `registry.k8s.io/e2e-test-images/agnhost` | `netexec` (HTTP and UDP "who am I") and `connect`, as the upstream e2e tests use them |
//! | `pause`, `registry.k8s.io/pause` | sleeps; holds nothing (the sandbox owns the namespaces) |
//! | `podnet` | podnet itself, with the container's `args` (the node agent's DaemonSet) |
//! | anything else | the container's `command` and `args`, run from the host's filesystem |

use k8s_openapi::api::core::v1::Container;

/// The image name under which the lab runs podnet itself.
pub const PODNET_IMAGE: &str = "podnet";

/// A program built into podnet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Builtin {
    /// `traefik/whoami`.
    Whoami,
    /// `nginx`.
    Nginx,
    /// Kubernetes' e2e test image.
    Agnhost,
    /// The pause container.
    Pause,
    /// podnet itself.
    Podnet,
}

impl Builtin {
    /// The name used on podnet's command line (`podnet workload NAME`).
    pub fn name(self) -> &'static str {
        match self {
            Builtin::Whoami => "whoami",
            Builtin::Nginx => "nginx",
            Builtin::Agnhost => "agnhost",
            Builtin::Pause => "pause",
            Builtin::Podnet => "podnet",
        }
    }

    fn for_image(image: &str) -> Option<Self> {
        let repository = image_repository(image);
        match repository.as_str() {
            "traefik/whoami" | "containous/whoami" => Some(Builtin::Whoami),
            "library/nginx" | "nginxinc/nginx-unprivileged" => Some(Builtin::Nginx),
            "e2e-test-images/agnhost" | "library/agnhost" => Some(Builtin::Agnhost),
            "library/pause" | "pause" | "kubernetes/pause" => Some(Builtin::Pause),
            "library/podnet" | "podnet/podnet" => Some(Builtin::Podnet),
            _ => None,
        }
    }
}

/// What a container runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Program {
    /// A built-in program with the container's `args`.
    Builtin(Builtin, Vec<String>),
    /// A command from the host (`command` followed by `args`).
    Command(Vec<String>),
}

impl Program {
    /// The program for a container, or why it cannot run in the lab.
    pub fn for_container(container: &Container) -> Result<Self, String> {
        let image = container.image.as_deref().unwrap_or_default();
        if image.is_empty() {
            return Err("has no image".into());
        }
        let command = container.command.clone().unwrap_or_default();
        let args = container.args.clone().unwrap_or_default();
        // A command replaces the image's entrypoint, built-in or not.
        if !command.is_empty() {
            return Ok(Program::Command(command.into_iter().chain(args).collect()));
        }
        if let Some(builtin) = Builtin::for_image(image) {
            return Ok(Program::Builtin(builtin, args));
        }
        if !args.is_empty() {
            return Ok(Program::Command(args));
        }
        Err(format!(
            "image {image:?} cannot be emulated: the lab has built-in traefik/whoami, nginx and pause; \
             give other images a command to run from the host (e.g. command: [sleep, infinity])"
        ))
    }
}

/// `nginx:1.25` -> `library/nginx`, `docker.io/traefik/whoami:v1` -> `traefik/whoami`,
/// `registry.k8s.io/pause:3.9` -> `pause`.
fn image_repository(image: &str) -> String {
    let without_digest = image.split('@').next().unwrap_or(image);
    let mut parts: Vec<&str> = without_digest.split('/').collect();
    // A tag is after the last ':' of the last part (a registry may have a port).
    if let Some(last) = parts.last_mut() {
        *last = last.split(':').next().unwrap_or(last);
    }
    let has_registry =
        parts.len() > 1 && (parts[0].contains('.') || parts[0].contains(':') || parts[0] == "localhost");
    let path: Vec<&str> = if has_registry { parts[1..].to_vec() } else { parts };
    match path.as_slice() {
        [single] if !has_registry => format!("library/{single}"),
        _ => path.join("/"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn container(image: &str, command: &[&str], args: &[&str]) -> Container {
        let list =
            |items: &[&str]| (!items.is_empty()).then(|| items.iter().map(|s| s.to_string()).collect());
        Container {
            name: "c".into(),
            image: Some(image.into()),
            command: list(command),
            args: list(args),
            ..Container::default()
        }
    }

    #[test]
    fn well_known_images_map_to_builtins_whatever_their_tag_or_registry() {
        for (image, builtin) in [
            ("traefik/whoami", Builtin::Whoami),
            ("docker.io/traefik/whoami:v1.10", Builtin::Whoami),
            ("nginx", Builtin::Nginx),
            ("nginx:1.25-alpine", Builtin::Nginx),
            ("docker.io/library/nginx@sha256:abc", Builtin::Nginx),
            ("registry.k8s.io/pause:3.9", Builtin::Pause),
            ("registry.k8s.io/e2e-test-images/agnhost:2.52", Builtin::Agnhost),
            ("k8s.gcr.io/pause:3.5", Builtin::Pause),
        ] {
            assert_eq!(
                Program::for_container(&container(image, &[], &[])),
                Ok(Program::Builtin(builtin, Vec::new())),
                "{image}"
            );
        }
    }

    #[test]
    fn commands_run_from_the_host_and_unknown_images_without_one_are_refused() {
        assert_eq!(
            Program::for_container(&container("nicolaka/netshoot", &["/bin/sh", "-c"], &["sleep 1"])),
            Ok(Program::Command(vec![
                "/bin/sh".into(),
                "-c".into(),
                "sleep 1".into()
            ]))
        );
        assert_eq!(
            Program::for_container(&container("nginx", &["sleep", "5"], &[])),
            Ok(Program::Command(vec!["sleep".into(), "5".into()]))
        );
        assert_eq!(
            Program::for_container(&container("traefik/whoami", &[], &["--port", "8080"])),
            Ok(Program::Builtin(
                Builtin::Whoami,
                vec!["--port".into(), "8080".into()]
            ))
        );
        let refused = Program::for_container(&container("redis:7", &[], &[])).unwrap_err();
        assert!(refused.contains("cannot be emulated"), "{refused}");
    }
}
