//! The agent's side of pod admission ([`podnet_cni::admission`]): CNI plugins report a new
//! pod's address here and wait until the policy controller has committed that pod to the
//! kernel, so its containers start already isolated.
//!
//! A report only fills the gap until kubelet publishes the pod's address: the pod's own
//! `status.podIP` always wins, and a reported address another local pod still holds in its
//! status is not used until that pod is gone (its sandbox is, or IPAM would not have handed the
//! address out again; the object follows), so a report can never take a live pod's address.

use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader, Write};
use std::net::Ipv4Addr;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixListener, UnixStream};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use podnet_cni::admission::{ADMITTED, Request, SOCKET};
use podnet_model::ObjectKey;

use crate::controller::Waker;

/// How long a request waits for its pod to be admitted (the plugin waits a little longer, to
/// hear why not).
pub const WAIT: Duration = Duration::from_secs(10);
/// How long a connected plugin has to send its request.
const READ_TIMEOUT: Duration = Duration::from_secs(2);

/// Reported addresses, and what the kernel admits: shared by the policy controller and the
/// connections waiting on it.
#[derive(Default)]
pub struct Admissions {
    state: Mutex<State>,
    changed: Condvar,
}

#[derive(Default)]
struct State {
    /// Addresses plugins reported, for pods whose status does not carry one yet.
    reported: BTreeMap<ObjectKey, Ipv4Addr>,
    /// The pod each address the kernel admits belongs to, as last committed.
    admitted: HashMap<Ipv4Addr, ObjectKey>,
}

impl Admissions {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The addresses reported for pods, to fill in what their status does not say yet.
    pub fn reported(&self) -> BTreeMap<ObjectKey, Ipv4Addr> {
        self.state().reported.clone()
    }

    /// Forgets the report of `pod` (it is gone, or its status now carries its address).
    pub fn forget(&self, pod: &ObjectKey) {
        self.state().reported.remove(pod);
    }

    /// The kernel now admits `admitted`: answers whoever waits for one of them.
    pub fn committed(&self, admitted: HashMap<Ipv4Addr, ObjectKey>) {
        self.state().admitted = admitted;
        self.changed.notify_all();
    }

    /// Records that `pod` has `address`, for the controller's next plan.
    pub fn report(&self, pod: &ObjectKey, address: Ipv4Addr) {
        self.state().reported.insert(pod.clone(), address);
    }

    /// Reports `pod` at `address`, wakes the controller, and waits up to `wait` until the
    /// kernel admits the pod at that address.
    pub fn admit(
        &self,
        pod: &ObjectKey,
        address: Ipv4Addr,
        controller: &Waker,
        wait: Duration,
    ) -> Result<(), String> {
        self.report(pod, address);
        controller.wake();
        let is_admitted = |state: &State| state.admitted.get(&address) == Some(pod);
        let mut state = self.state();
        let deadline = Instant::now() + wait;
        while !is_admitted(&state) {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                if state.reported.get(pod) == Some(&address) {
                    state.reported.remove(pod);
                }
                return Err(format!(
                    "pod {pod} at {address} not admitted within {}s: the agent has not seen the pod on this node, or cannot program the kernel (see its log)",
                    wait.as_secs()
                ));
            }
            state = self
                .changed
                .wait_timeout(state, left)
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .0;
        }
        Ok(())
    }
}

/// Listens on the node's admission socket (in the calling thread's network namespace) and
/// answers each plugin from a thread of its own.
pub fn serve(admissions: Arc<Admissions>, controller: Waker) -> std::io::Result<()> {
    let listener = UnixListener::bind_addr(&SocketAddr::from_abstract_name(SOCKET)?)?;
    std::thread::Builder::new()
        .name("admission".into())
        .spawn(move || {
            for stream in listener.incoming().flatten() {
                let (admissions, controller) = (admissions.clone(), controller.clone());
                let _ = std::thread::Builder::new()
                    .name("admission-request".into())
                    .spawn(move || answer(stream, &admissions, &controller));
            }
        })?;
    Ok(())
}

/// Reads one request from `stream` and answers it.
fn answer(stream: UnixStream, admissions: &Admissions, controller: &Waker) {
    let _ = stream.set_read_timeout(Some(READ_TIMEOUT));
    let mut line = String::new();
    if BufReader::new(&stream).read_line(&mut line).is_err() {
        return;
    }
    let reply = match Request::parse(&line) {
        Some(request) => {
            let pod = ObjectKey {
                namespace: request.namespace,
                name: request.name,
            };
            match admissions.admit(&pod, request.address, controller, WAIT) {
                Ok(()) => ADMITTED.to_owned(),
                Err(err) => {
                    tracing::warn!("admission: {err}");
                    err
                }
            }
        }
        None => format!("not an admission request: {:?}", line.trim_end()),
    };
    let _ = (&stream).write_all(format!("{reply}\n").as_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    fn waker() -> (Waker, std::sync::mpsc::Receiver<()>) {
        let (sender, wakes) = std::sync::mpsc::channel();
        let sender = Mutex::new(sender);
        let waker = Waker::new(move || {
            let _ = sender.lock().unwrap().send(());
        });
        (waker, wakes)
    }

    fn pod(name: &str) -> ObjectKey {
        ObjectKey {
            namespace: "x".into(),
            name: name.into(),
        }
    }

    #[test]
    fn a_request_is_answered_once_its_pod_is_committed_at_its_address() {
        let admissions = Arc::new(Admissions::default());
        let (waker, wakes) = waker();
        let address = Ipv4Addr::new(10, 0, 0, 5);
        let waiting = {
            let admissions = admissions.clone();
            std::thread::spawn(move || admissions.admit(&pod("a"), address, &waker, WAIT))
        };
        wakes.recv().expect("the controller is woken");
        assert_eq!(admissions.reported(), [(pod("a"), address)].into());
        // Another pod at that address does not answer it; the right one does.
        admissions.committed([(address, pod("b"))].into());
        std::thread::sleep(Duration::from_millis(50));
        assert!(!waiting.is_finished());
        admissions.committed([(address, pod("a"))].into());
        assert_eq!(waiting.join().unwrap(), Ok(()));
    }

    #[test]
    fn a_request_never_admitted_fails_and_takes_its_report_back() {
        let admissions = Admissions::default();
        let (waker, _wakes) = waker();
        let err = admissions
            .admit(
                &pod("a"),
                Ipv4Addr::new(10, 0, 0, 5),
                &waker,
                Duration::from_millis(20),
            )
            .unwrap_err();
        assert!(err.contains("pod x/a at 10.0.0.5 not admitted"), "{err}");
        assert!(admissions.reported().is_empty());
    }
}
