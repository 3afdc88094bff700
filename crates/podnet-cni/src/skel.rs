//! The plugin skeleton: reads the environment and stdin, runs the command, prints the answer.
//!
//! A CNI plugin is an executable run once per operation. It answers on stdout: the result of
//! ADD, the version list of VERSION, nothing for a successful DEL, CHECK, STATUS or GC, and an
//! error object (with exit status 1) when anything fails. Everything shared by all plugins
//! lives here, so each plugin only implements the commands themselves.

use std::collections::HashSet;
use std::io::{Read, Write};
use std::process::ExitCode;

use serde::Deserialize;
use serde_json::Value;

use crate::phases;
use crate::spec::{
    CniError, CniResult, Command, Environment, ErrorCode, SUPPORTED, Version, decode, version_of,
};

/// One invocation: the environment and the decoded configuration.
#[derive(Debug)]
pub struct Call {
    /// The `CNI_*` variables.
    pub env: Environment,
    /// The configuration as decoded from stdin.
    pub config: Value,
    /// The configuration's spec version; results and errors are written in it.
    pub version: Version,
}

/// An attachment the runtime still knows about, from GC's `cni.dev/valid-attachments`.
#[derive(Deserialize)]
struct Attachment {
    #[serde(rename = "containerID")]
    container_id: String,
    ifname: String,
}

impl Call {
    /// The attachments GC must keep, as (container ID, interface name); anything else the plugin
    /// holds may be released.
    ///
    /// The spec first named the key `cni.dev/attachments` and later `cni.dev/valid-attachments`;
    /// libcni sends both, and either is accepted.
    pub fn valid_attachments(&self) -> Result<HashSet<(String, String)>, CniError> {
        let listed = self
            .config
            .get("cni.dev/valid-attachments")
            .or_else(|| self.config.get("cni.dev/attachments"));
        match listed {
            // Without the list, GC would release every attachment: refuse instead.
            None | Some(Value::Null) => Err(CniError::invalid_config("GC needs the runtime's attachments")
                .details("the configuration must carry \"cni.dev/valid-attachments\" (an empty list releases everything)")),
            Some(list) => Vec::<Attachment>::deserialize(list)
                .map(|list| list.into_iter().map(|attachment| (attachment.container_id, attachment.ifname)).collect())
                .map_err(|err| CniError::invalid_config("invalid cni.dev/valid-attachments").details(err.to_string())),
        }
    }
}

/// The commands a plugin implements.
pub trait Plugin {
    /// Attaches the container and reports what was done.
    fn add(&self, call: &Call) -> Result<CniResult, CniError>;
    /// Detaches the container; must succeed when there is nothing left to remove.
    fn del(&self, call: &Call) -> Result<(), CniError>;
    /// Verifies the attachment described by `prevResult`.
    fn check(&self, call: &Call) -> Result<(), CniError>;
    /// Reports whether ADD can be served now.
    fn status(&self, call: &Call) -> Result<(), CniError>;
    /// Releases what belongs to attachments not in the valid list.
    fn gc(&self, call: &Call) -> Result<(), CniError>;
}

/// What the plugin prints and how it exits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// The text for stdout (empty for a silent success).
    pub stdout: String,
    /// Whether the command succeeded (exit status 0).
    pub success: bool,
}

/// Runs `plugin` as a CNI executable: environment from the process, config from stdin.
pub fn main(plugin: &dyn Plugin) -> ExitCode {
    phases::start();
    let mut stdin = Vec::new();
    let read = std::io::stdin().read_to_end(&mut stdin);
    let answer = match read {
        Ok(_) => run(plugin, |name| std::env::var(name).ok(), &stdin),
        Err(err) => failure(
            Version::LATEST,
            &CniError::io("cannot read stdin").details(err.to_string()),
        ),
    };
    let mut stdout = std::io::stdout().lock();
    let _ = stdout.write_all(answer.stdout.as_bytes());
    let _ = stdout.flush();
    phases::end("answer");
    phases::report();
    if answer.success {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// Runs one invocation and returns what to print; the testable core of [`main`].
pub fn run(plugin: &dyn Plugin, lookup: impl Fn(&str) -> Option<String>, stdin: &[u8]) -> Answer {
    // Errors are written in the configuration's version when it can be read.
    let config = decode(stdin);
    let version = config
        .as_ref()
        .ok()
        .and_then(|config| version_of(config).ok())
        .unwrap_or(Version::LATEST);
    let env = match Environment::parse(lookup) {
        Ok(env) => env,
        Err(err) => return failure(version, &err),
    };
    if env.command == Command::Version {
        let asked = config
            .as_ref()
            .ok()
            .and_then(|config| config.get("cniVersion"))
            .and_then(|version| version.as_str());
        return success(version_answer(asked));
    }
    let outcome = config
        .and_then(|config| Ok((version_of(&config)?, config)))
        .and_then(|(version, config)| {
            let call = Call { env, config, version };
            dispatch(plugin, &call)
        });
    match outcome {
        Ok(stdout) => success(stdout),
        Err(err) => failure(version, &err),
    }
}

fn dispatch(plugin: &dyn Plugin, call: &Call) -> Result<String, CniError> {
    let command = call.env.command;
    let refuse = |since: &str| {
        Err(CniError::new(
            ErrorCode::IncompatibleVersion,
            format!(
                "config version {} does not allow {}",
                call.version,
                command.as_str()
            ),
        )
        .details(format!("{} needs cniVersion {since} or later", command.as_str())))
    };
    match command {
        Command::Add => plugin.add(call).map(|result| result.to_json(call.version)),
        Command::Del => plugin.del(call).map(|()| String::new()),
        Command::Check if !call.version.supports_check() => refuse("0.4.0"),
        Command::Check => plugin.check(call).map(|()| String::new()),
        Command::Status | Command::Gc if !call.version.supports_status_and_gc() => refuse("1.1.0"),
        Command::Status => plugin.status(call).map(|()| String::new()),
        Command::Gc => plugin.gc(call).map(|()| String::new()),
        Command::Version => Ok(version_answer(Some(call.version.as_str()))),
    }
}

/// VERSION's answer: the versions podnet supports, with `cniVersion` the one the input named
/// (the spec: "the value of cniVersion specified on input"), or the newest without one.
fn version_answer(asked: Option<&str>) -> String {
    let supported: Vec<&str> = SUPPORTED.iter().map(|version| version.as_str()).collect();
    serde_json::json!({
        "cniVersion": asked.unwrap_or(Version::LATEST.as_str()),
        "supportedVersions": supported,
    })
    .to_string()
}

fn success(stdout: String) -> Answer {
    Answer {
        stdout,
        success: true,
    }
}

fn failure(version: Version, err: &CniError) -> Answer {
    Answer {
        stdout: err.to_json(version),
        success: false,
    }
}
