//! The runtime side of CNI: running a network configuration list for one attachment, as
//! containerd and CRI-O do through libcni.
//!
//! For ADD the plugins of the list run in order, each receiving the list's `cniVersion` and
//! `name`, the runtime values of the capabilities it declares (`runtimeConfig`), and the
//! previous plugin's result (`prevResult`). DEL runs them in reverse order, each receiving the
//! final ADD result. The plugins run in the namespace of the calling thread: run this inside
//! `Netns::run` of the node.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command as Process, Stdio};

use serde_json::{Map, Value};

use crate::spec::{CniError, CniResult, Command, ErrorCode, Version, decode};

/// A network configuration list (a `.conflist`, or a single `.conf` taken as a list of one).
#[derive(Debug, Clone)]
pub struct NetworkConfigList {
    /// The spec version of the list.
    pub cni_version: Version,
    /// The network name.
    pub name: String,
    /// The plugin entries, in order.
    pub plugins: Vec<Map<String, Value>>,
}

impl NetworkConfigList {
    /// Reads a conflist (`{"name", "cniVersion", "plugins": [...]}`) or a single plugin
    /// configuration (`{"name", "cniVersion", "type", ...}`).
    pub fn parse(text: &str) -> Result<Self, CniError> {
        let value = decode(text.as_bytes())?;
        let object = value.as_object().expect("decode returns objects");
        let cni_version = crate::spec::version_of(&value)?;
        let name = object
            .get("name")
            .and_then(Value::as_str)
            .ok_or_else(|| CniError::invalid_config("network configuration has no \"name\""))?
            .to_owned();
        let plugins = match object.get("plugins") {
            Some(Value::Array(plugins)) => plugins
                .iter()
                .map(|plugin| {
                    plugin.as_object().cloned().ok_or_else(|| {
                        CniError::invalid_config("each entry of \"plugins\" must be an object")
                    })
                })
                .collect::<Result<Vec<_>, _>>()?,
            Some(_) => return Err(CniError::invalid_config("\"plugins\" must be a list")),
            None => vec![object.clone()],
        };
        if plugins.is_empty() {
            return Err(CniError::invalid_config(format!(
                "network {name:?} has no plugins"
            )));
        }
        for plugin in &plugins {
            if !plugin.get("type").is_some_and(Value::is_string) {
                return Err(CniError::invalid_config(format!(
                    "a plugin of network {name:?} has no \"type\""
                )));
            }
        }
        Ok(NetworkConfigList {
            cni_version,
            name,
            plugins,
        })
    }

    /// The configuration handed to plugin `index`.
    fn plugin_config(&self, index: usize, attachment: &Attachment<'_>, prev_result: Option<&Value>) -> Value {
        let mut config = self.plugins[index].clone();
        config.insert("cniVersion".into(), self.cni_version.as_str().into());
        config.insert("name".into(), self.name.clone().into());
        let declared: Vec<String> = config
            .get("capabilities")
            .and_then(Value::as_object)
            .map(|caps| {
                caps.iter()
                    .filter(|(_, on)| on.as_bool() == Some(true))
                    .map(|(k, _)| k.clone())
                    .collect()
            })
            .unwrap_or_default();
        let runtime_config: Map<String, Value> = attachment
            .capabilities
            .iter()
            .filter(|(capability, _)| declared.contains(capability))
            .cloned()
            .collect();
        if !runtime_config.is_empty() {
            config.insert("runtimeConfig".into(), Value::Object(runtime_config));
        }
        if let Some(prev) = prev_result {
            config.insert("prevResult".into(), prev.clone());
        }
        Value::Object(config)
    }
}

/// One container's attachment to a network.
#[derive(Debug, Clone)]
pub struct Attachment<'a> {
    /// The container (sandbox) ID.
    pub container_id: &'a str,
    /// The sandbox's network namespace.
    pub netns: &'a Path,
    /// The interface name inside the sandbox.
    pub ifname: &'a str,
    /// `CNI_ARGS` pairs.
    pub args: Vec<(String, String)>,
    /// Runtime values for capabilities (`portMappings`, ...), given to plugins that declare them.
    pub capabilities: Vec<(String, Value)>,
}

/// Executes plugins found in a list of CNI bin directories.
#[derive(Debug, Clone)]
pub struct Runtime {
    bin_dirs: Vec<PathBuf>,
}

impl Runtime {
    /// A runtime looking plugins up in `bin_dirs`, in order.
    pub fn new(bin_dirs: Vec<PathBuf>) -> Self {
        Runtime { bin_dirs }
    }

    /// Attaches: runs ADD of every plugin in order and returns the final result (as raw JSON,
    /// the form DEL needs back, and parsed). When a plugin fails, the attachment is deleted
    /// again, as container runtimes do after a failed ADD, so that the plugins before it release
    /// what they set up.
    pub fn add(
        &self,
        list: &NetworkConfigList,
        attachment: &Attachment<'_>,
    ) -> Result<(Value, CniResult), CniError> {
        let mut prev: Option<Value> = None;
        for index in 0..list.plugins.len() {
            let config = list.plugin_config(index, attachment, prev.as_ref());
            let added = self.exec(Command::Add, &config, attachment).and_then(|stdout| {
                serde_json::from_slice(&stdout).map_err(|err| {
                    CniError::new(ErrorCode::Decoding, "a plugin printed an invalid result")
                        .details(err.to_string())
                })
            });
            match added {
                Ok(result) => prev = Some(result),
                Err(err) => {
                    let _ = self.del(list, attachment, prev.as_ref());
                    return Err(err);
                }
            }
        }
        let raw = prev.expect("a list has plugins");
        let result = CniResult::from_value(&raw)?;
        Ok((raw, result))
    }

    /// Detaches: runs DEL of every plugin in reverse order, each seeing the ADD result. Keeps
    /// going after a failure and reports the first one.
    pub fn del(
        &self,
        list: &NetworkConfigList,
        attachment: &Attachment<'_>,
        result: Option<&Value>,
    ) -> Result<(), CniError> {
        let mut first_error = None;
        for index in (0..list.plugins.len()).rev() {
            let config = list.plugin_config(index, attachment, result);
            if let Err(err) = self.exec(Command::Del, &config, attachment) {
                first_error.get_or_insert(err);
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    fn exec(
        &self,
        command: Command,
        config: &Value,
        attachment: &Attachment<'_>,
    ) -> Result<Vec<u8>, CniError> {
        let plugin_type = config["type"].as_str().expect("checked at parse");
        let executable = self
            .bin_dirs
            .iter()
            .map(|dir| dir.join(plugin_type))
            .find(|path| path.is_file())
            .ok_or_else(|| {
                CniError::generic(format!(
                    "failed to find plugin {plugin_type:?} in {:?}",
                    self.bin_dirs
                ))
            })?;
        let path = std::env::join_paths(&self.bin_dirs).expect("bin dirs are valid paths");
        let args: Vec<String> = attachment.args.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let mut child = Process::new(&executable)
            .env("CNI_COMMAND", command.as_str())
            .env("CNI_CONTAINERID", attachment.container_id)
            .env("CNI_NETNS", attachment.netns)
            .env("CNI_IFNAME", attachment.ifname)
            .env("CNI_ARGS", args.join(";"))
            .env("CNI_PATH", path)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|err| {
                CniError::generic(format!("cannot run {}", executable.display())).details(err.to_string())
            })?;
        let stdin = serde_json::to_vec(config).expect("configs serialize");
        let _ = child.stdin.take().expect("piped").write_all(&stdin);
        let output = child.wait_with_output().map_err(|err| {
            CniError::generic(format!("{plugin_type} did not finish")).details(err.to_string())
        })?;
        if output.status.success() {
            return Ok(output.stdout);
        }
        let answer: Value = serde_json::from_slice(&output.stdout).unwrap_or(Value::Null);
        let code = answer["code"]
            .as_u64()
            .map_or(ErrorCode::Generic, |code| ErrorCode::from_value(code as u32));
        let msg = answer["msg"].as_str().map(str::to_owned).unwrap_or_else(|| {
            format!(
                "{plugin_type} {} failed: {}",
                command.as_str(),
                String::from_utf8_lossy(&output.stderr).trim()
            )
        });
        Err(CniError::new(code, format!("{plugin_type}: {msg}"))
            .details(answer["details"].as_str().unwrap_or_default()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn builds_each_plugin_config_like_libcni() {
        let list = NetworkConfigList::parse(
            &json!({
                "cniVersion": "1.0.0", "name": "net",
                "plugins": [
                    {"type": "bridge", "bridge": "cni0"},
                    {"type": "portmap", "capabilities": {"portMappings": true}}
                ]
            })
            .to_string(),
        )
        .unwrap();
        let attachment = Attachment {
            container_id: "c1",
            netns: Path::new("/run/netns/c1"),
            ifname: "eth0",
            args: Vec::new(),
            capabilities: vec![(
                "portMappings".into(),
                json!([{"hostPort": 8080, "containerPort": 80}]),
            )],
        };
        let bridge = list.plugin_config(0, &attachment, None);
        assert_eq!(
            bridge,
            json!({"type": "bridge", "bridge": "cni0", "cniVersion": "1.0.0", "name": "net"})
        );
        let prev = json!({"cniVersion": "1.0.0", "ips": []});
        let portmap = list.plugin_config(1, &attachment, Some(&prev));
        assert_eq!(
            portmap["runtimeConfig"]["portMappings"][0]["hostPort"],
            json!(8080)
        );
        assert_eq!(portmap["prevResult"], prev);
    }

    #[test]
    fn a_single_conf_is_a_list_of_one() {
        let list =
            NetworkConfigList::parse(r#"{"cniVersion":"0.2.0","name":"demo_br","type":"bridge"}"#).unwrap();
        assert_eq!(list.plugins.len(), 1);
        assert_eq!(list.cni_version, Version::V0_2_0);
        assert!(NetworkConfigList::parse(r#"{"cniVersion":"1.0.0","name":"x","plugins":[{}]}"#).is_err());
    }
}
