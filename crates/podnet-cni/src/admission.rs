//! NetworkPolicy admission: how ADD waits until the node's NetworkPolicy knows the new pod.
//!
//! Kubelet publishes a pod's address only after the runtime's CNI ADD has returned and its
//! containers have started, so an agent that learned addresses from the API alone would judge
//! a new pod's first packets without knowing whose they are. Instead the CNI plugin, once the
//! pod's interface is wired and before it answers, tells the node's agent "pod N/P has address
//! A" and waits for "admitted": the agent has then committed the pod's isolation and allows
//! (and, until then, the node drops traffic of pod addresses it has not admitted). Cilium's CNI
//! waits for its agent the same way.
//!
//! The two meet on an abstract Unix socket, which the kernel scopes to a network namespace: the
//! node's agent (host network) and the plugin (run by the runtime in the node's namespace)
//! find each other without a path to agree on, and each lab node gets its own.
//!
//! ```text
//! plugin -> agent:  ADMIT <namespace> <name> <address>\n
//! agent -> plugin:  admitted\n     or a line saying why not (ADD then fails: try again later)
//! ```
//!
//! Only Kubernetes pods (`K8S_POD_NAMESPACE` and `K8S_POD_NAME` in `CNI_ARGS`) are reported,
//! and only when an agent listens in the node's network namespace; without one the pod is
//! wired at once (where an agent has programmed the node before, its tables keep the pod's
//! traffic out until the agent is back and learns the address from the API).

use std::io::{BufRead, BufReader, ErrorKind, Write};
use std::net::{IpAddr, Ipv4Addr};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixStream};
use std::time::Duration;

use crate::Call;
use crate::spec::{CniError, CniResult, ErrorCode};

/// The abstract socket name (without its leading NUL) the node's agent listens on.
pub const SOCKET: &str = "podnet/policy-admission";

/// The agent's answer once the pod is admitted.
pub const ADMITTED: &str = "admitted";

/// A plugin's request: admit pod `namespace`/`name` at `address`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// The pod's namespace (`K8S_POD_NAMESPACE`).
    pub namespace: String,
    /// The pod's name (`K8S_POD_NAME`).
    pub name: String,
    /// Its IPv4 address, as ADD assigned it.
    pub address: Ipv4Addr,
}

impl Request {
    /// The request as one line, newline included.
    pub fn line(&self) -> String {
        format!("ADMIT {} {} {}\n", self.namespace, self.name, self.address)
    }

    /// Parses a line (trailing newline allowed); `None` when it is not a request.
    pub fn parse(line: &str) -> Option<Self> {
        let mut words = line.trim_end_matches(['\r', '\n']).split(' ');
        let (Some("ADMIT"), Some(namespace), Some(name), Some(address), None) = (
            words.next(),
            words.next(),
            words.next(),
            words.next(),
            words.next(),
        ) else {
            return None;
        };
        if namespace.is_empty() || name.is_empty() {
            return None;
        }
        Some(Request {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
            address: address.parse().ok()?,
        })
    }
}

/// How long ADD waits for the agent's answer: a little longer than the agent waits for the
/// pod, to hear why when it gives up.
const WAIT: Duration = Duration::from_secs(12);

/// Reports the pod `call` wires at `result`'s IPv4 address to the node's agent and waits until
/// the agent admits it. Fails (for the runtime to try again) when the agent answers anything
/// else or nothing in time.
pub fn await_admission(call: &Call, result: &CniResult) -> Result<(), CniError> {
    let Some(request) = request(call, result) else {
        return Ok(());
    };
    let address = SocketAddr::from_abstract_name(SOCKET).expect("a short abstract name");
    let stream = match UnixStream::connect_addr(&address) {
        Ok(stream) => stream,
        Err(err) if err.kind() == ErrorKind::ConnectionRefused => return Ok(()),
        Err(err) => return Err(not_admitted(&request, &format!("cannot reach the agent: {err}"))),
    };
    stream
        .set_read_timeout(Some(WAIT))
        .and_then(|()| (&stream).write_all(request.line().as_bytes()))
        .map_err(|err| not_admitted(&request, &format!("cannot ask the agent: {err}")))?;
    let mut answer = String::new();
    match BufReader::new(&stream).read_line(&mut answer) {
        Ok(_) if answer.trim_end() == ADMITTED => Ok(()),
        Ok(0) => Err(not_admitted(&request, "the agent closed the connection")),
        Ok(_) => Err(not_admitted(&request, answer.trim_end())),
        Err(err) if matches!(err.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => Err(not_admitted(
            &request,
            &format!("no answer within {}s", WAIT.as_secs()),
        )),
        Err(err) => Err(not_admitted(&request, &err.to_string())),
    }
}

/// The request for the pod of `call`, when it is a Kubernetes pod with an IPv4 address.
fn request(call: &Call, result: &CniResult) -> Option<Request> {
    let arg = |name: &str| {
        call.env
            .args
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.clone())
            .filter(|value| !value.is_empty())
    };
    let address = result.ips.iter().find_map(|ip| match ip.address.addr() {
        IpAddr::V4(v4) => Some(v4),
        IpAddr::V6(_) => None,
    })?;
    Some(Request {
        namespace: arg("K8S_POD_NAMESPACE")?,
        name: arg("K8S_POD_NAME")?,
        address,
    })
}

fn not_admitted(request: &Request, why: &str) -> CniError {
    CniError::new(
        ErrorCode::TryAgainLater,
        format!(
            "the node's podnet agent did not admit pod {}/{} at {} to its NetworkPolicy: {why}",
            request.namespace, request.name, request.address
        ),
    )
    .details("the pod's containers would start before its policies apply; see the agent's log, then retry")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_reads_back_from_its_line() {
        let request = Request {
            namespace: "x".into(),
            name: "a-1".into(),
            address: Ipv4Addr::new(10, 244, 1, 7),
        };
        assert_eq!(request.line(), "ADMIT x a-1 10.244.1.7\n");
        assert_eq!(Request::parse(&request.line()), Some(request));
    }

    #[test]
    fn anything_else_is_not_a_request() {
        for line in [
            "",
            "ADMIT x a-1\n",
            "ADMIT x a-1 10.244.1.7 extra\n",
            "ADMIT x a-1 fd00::7\n",
            "ADMIT  a-1 10.244.1.7\n",
            "admit x a-1 10.244.1.7\n",
        ] {
            assert_eq!(Request::parse(line), None, "{line:?}");
        }
    }
}
