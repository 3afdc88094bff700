//! The invocation environment: the `CNI_*` variables a runtime sets when it executes a plugin.
//!
//! The runtime passes the command and the container's identity in the environment and the
//! network configuration on stdin. Which variables are required depends on the command: ADD and
//! CHECK need the whole set, DEL may omit `CNI_NETNS` (the namespace can be gone already),
//! STATUS and GC only need `CNI_PATH`, VERSION needs nothing.

use std::path::{Path, PathBuf};

use super::error::CniError;

/// A CNI command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    /// Attach a container to the network.
    Add,
    /// Detach a container from the network, releasing what ADD took.
    Del,
    /// Verify that an attachment is still as ADD left it.
    Check,
    /// Report whether the plugin is ready to serve ADD.
    Status,
    /// Release everything that belongs to attachments the runtime no longer knows.
    Gc,
    /// Report the spec versions the plugin supports.
    Version,
}

impl Command {
    /// Parses `CNI_COMMAND`.
    pub fn parse(text: &str) -> Option<Self> {
        Some(match text {
            "ADD" => Command::Add,
            "DEL" => Command::Del,
            "CHECK" => Command::Check,
            "STATUS" => Command::Status,
            "GC" => Command::Gc,
            "VERSION" => Command::Version,
            _ => return None,
        })
    }

    /// The command as the runtime spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            Command::Add => "ADD",
            Command::Del => "DEL",
            Command::Check => "CHECK",
            Command::Status => "STATUS",
            Command::Gc => "GC",
            Command::Version => "VERSION",
        }
    }

    fn needs_attachment(self) -> bool {
        matches!(self, Command::Add | Command::Del | Command::Check)
    }

    fn needs_netns(self) -> bool {
        matches!(self, Command::Add | Command::Check)
    }

    fn needs_path(self) -> bool {
        !matches!(self, Command::Version)
    }
}

/// The parsed environment of one plugin invocation.
#[derive(Debug, Clone)]
pub struct Environment {
    /// `CNI_COMMAND`.
    pub command: Command,
    /// `CNI_CONTAINERID`: required for ADD, DEL and CHECK.
    pub container_id: String,
    /// `CNI_NETNS`: required for ADD and CHECK, optional for DEL.
    pub netns: Option<PathBuf>,
    /// `CNI_IFNAME`: the interface name inside the container.
    pub ifname: String,
    /// `CNI_ARGS`, split into key-value pairs.
    pub args: Vec<(String, String)>,
    /// `CNI_PATH`: directories searched for delegated (IPAM) plugins.
    pub path: Vec<PathBuf>,
}

impl Environment {
    /// Reads and validates the environment through `lookup` (normally `std::env::var`).
    pub fn parse(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, CniError> {
        let get = |name: &str| lookup(name).filter(|value| !value.is_empty());
        let command_text = get("CNI_COMMAND").ok_or_else(|| {
            CniError::invalid_env("required env variable CNI_COMMAND is missing")
                .details("set CNI_COMMAND to ADD, DEL, CHECK, STATUS, GC or VERSION")
        })?;
        let command = Command::parse(&command_text).ok_or_else(|| {
            CniError::invalid_env(format!("unknown CNI_COMMAND {command_text:?}"))
                .details("CNI_COMMAND must be ADD, DEL, CHECK, STATUS, GC or VERSION")
        })?;
        let required = [
            ("CNI_CONTAINERID", command.needs_attachment()),
            ("CNI_NETNS", command.needs_netns()),
            ("CNI_IFNAME", command.needs_attachment()),
            ("CNI_PATH", command.needs_path()),
        ];
        let missing: Vec<&str> = required
            .iter()
            .filter(|(name, needed)| *needed && get(name).is_none())
            .map(|(name, _)| *name)
            .collect();
        if !missing.is_empty() {
            return Err(CniError::invalid_env(format!(
                "required env variables [{}] missing",
                missing.join(",")
            ))
            .details(format!("the runtime must set them for {}", command.as_str())));
        }
        let container_id = get("CNI_CONTAINERID").unwrap_or_default();
        let netns = get("CNI_NETNS").map(PathBuf::from);
        let ifname = get("CNI_IFNAME").unwrap_or_default();
        let path = get("CNI_PATH")
            .map(|value| std::env::split_paths(&value).collect())
            .unwrap_or_default();
        let args = match get("CNI_ARGS") {
            Some(text) => parse_args(&text)?,
            None => Vec::new(),
        };
        if command.needs_attachment() {
            validate_container_id(&container_id)?;
            validate_ifname(&ifname)?;
        }
        Ok(Environment {
            command,
            container_id,
            netns,
            ifname,
            args,
            path,
        })
    }

    /// The network namespace path, which ADD and CHECK always have.
    pub fn netns(&self) -> Result<&Path, CniError> {
        self.netns
            .as_deref()
            .ok_or_else(|| CniError::invalid_env("required env variable CNI_NETNS is missing"))
    }

    /// The value of `CNI_ARGS` key `key`, if present.
    pub fn arg(&self, key: &str) -> Option<&str> {
        self.args
            .iter()
            .find(|(name, _)| name == key)
            .map(|(_, value)| value.as_str())
    }
}

/// Splits `CNI_ARGS` (`K1=V1;K2=V2`).
fn parse_args(text: &str) -> Result<Vec<(String, String)>, CniError> {
    text.split(';')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            pair.split_once('=')
                .map(|(key, value)| (key.to_owned(), value.to_owned()))
                .ok_or_else(|| {
                    CniError::invalid_env(format!("invalid CNI_ARGS pair {pair:?}"))
                        .details("CNI_ARGS must be KEY=VALUE pairs separated by ';'")
                })
        })
        .collect()
}

/// A container ID must be non-empty and made of alphanumerics, `_`, `.` and `-` (it names files).
fn validate_container_id(id: &str) -> Result<(), CniError> {
    if super::is_identifier(id) {
        return Ok(());
    }
    Err(CniError::invalid_env("invalid characters in containerID").details(format!(
        "{id:?}: a container ID starts with a letter or digit and holds only letters, digits, '_', '.' and '-'"
    )))
}

/// An interface name must be a valid Linux link name: 1-15 bytes, no '/', ':' or whitespace.
pub fn validate_ifname(name: &str) -> Result<(), CniError> {
    let problem = if name.is_empty() {
        "interface name is empty"
    } else if name.len() > 15 {
        "interface name is too long"
    } else if name == "." || name == ".." {
        "interface name is . or .."
    } else if name.chars().any(|c| c == '/' || c == ':' || c.is_whitespace()) {
        "interface name contains / or : or whitespace characters"
    } else {
        return Ok(());
    };
    Err(CniError::invalid_env(problem).details(format!(
        "{name:?}: an interface name has 1 to 15 characters and no '/', ':' or whitespace"
    )))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::error::ErrorCode;

    fn env_of(pairs: &[(&str, &str)]) -> Result<Environment, CniError> {
        let owned: Vec<(String, String)> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Environment::parse(|name| {
            owned
                .iter()
                .find(|(key, _)| key == name)
                .map(|(_, value)| value.clone())
        })
    }

    const ADD: &[(&str, &str)] = &[
        ("CNI_COMMAND", "ADD"),
        ("CNI_CONTAINERID", "c1"),
        ("CNI_NETNS", "/run/netns/c1"),
        ("CNI_IFNAME", "eth0"),
        ("CNI_PATH", "/opt/cni/bin:/usr/lib/cni"),
        ("CNI_ARGS", "IgnoreUnknown=1;K8S_POD_NAME=web"),
    ];

    #[test]
    fn parses_a_complete_add() {
        let env = env_of(ADD).unwrap();
        assert_eq!(env.command, Command::Add);
        assert_eq!(env.container_id, "c1");
        assert_eq!(env.path.len(), 2);
        assert_eq!(env.arg("K8S_POD_NAME"), Some("web"));
    }

    #[test]
    fn each_missing_variable_is_named() {
        for missing in ["CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME", "CNI_PATH"] {
            let pairs: Vec<_> = ADD.iter().copied().filter(|(k, _)| *k != missing).collect();
            let err = env_of(&pairs).unwrap_err();
            assert_eq!(err.code, ErrorCode::InvalidEnvironment);
            assert_eq!(err.msg, format!("required env variables [{missing}] missing"));
        }
        let err = env_of(&[("CNI_COMMAND", "ADD")]).unwrap_err();
        assert_eq!(
            err.msg,
            "required env variables [CNI_CONTAINERID,CNI_NETNS,CNI_IFNAME,CNI_PATH] missing"
        );
    }

    #[test]
    fn del_does_not_need_a_netns_and_version_needs_nothing() {
        let del: Vec<_> = ADD
            .iter()
            .map(|&(k, v)| if k == "CNI_COMMAND" { (k, "DEL") } else { (k, v) })
            .filter(|(k, _)| *k != "CNI_NETNS")
            .collect();
        assert!(env_of(&del).unwrap().netns.is_none());
        assert_eq!(
            env_of(&[("CNI_COMMAND", "VERSION")]).unwrap().command,
            Command::Version
        );
    }

    #[test]
    fn refuses_unknown_commands_and_bad_names() {
        assert_eq!(
            env_of(&[("CNI_COMMAND", "FROB")]).unwrap_err().code,
            ErrorCode::InvalidEnvironment
        );
        for (key, bad) in [
            ("CNI_IFNAME", "this-name-is-too-long"),
            ("CNI_IFNAME", "a/b"),
            ("CNI_CONTAINERID", "../etc"),
            ("CNI_ARGS", "novalue"),
        ] {
            let pairs: Vec<_> = ADD
                .iter()
                .map(|&(k, v)| if k == key { (k, bad) } else { (k, v) })
                .collect();
            assert!(env_of(&pairs).is_err(), "{key}={bad} accepted");
        }
    }
}
