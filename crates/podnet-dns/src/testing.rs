//! Test helpers: cluster objects, a cluster source fed by the test, queries, and a stand-in
//! upstream server.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query};
use hickory_proto::rr::{Name, Record, RecordType};
use k8s_openapi::api::core::v1::{Namespace, Service, ServicePort, ServiceSpec};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort, EndpointSlice};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use podnet_model::{ClusterSource, Event, Kind, Object};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::mpsc;

use crate::answer::Question;

fn meta(namespace: &str, name: &str) -> ObjectMeta {
    ObjectMeta {
        namespace: Some(namespace.into()),
        name: Some(name.into()),
        ..ObjectMeta::default()
    }
}

/// A port `(name, protocol, number)`.
pub type PortSpec<'a> = (&'a str, &'a str, i32);

/// A ClusterIP service with these addresses (comma-separated for dual-stack) and ports.
pub fn service(namespace: &str, name: &str, cluster_ips: &str, ports: &[PortSpec<'_>]) -> Object {
    Object::Service(Box::new(Service {
        metadata: meta(namespace, name),
        spec: Some(ServiceSpec {
            cluster_ip: cluster_ips.split(',').next().map(Into::into),
            cluster_ips: Some(cluster_ips.split(',').map(Into::into).collect()),
            ports: Some(
                ports
                    .iter()
                    .map(|(name, protocol, port)| ServicePort {
                        name: (!name.is_empty()).then(|| (*name).into()),
                        protocol: Some((*protocol).into()),
                        port: *port,
                        ..ServicePort::default()
                    })
                    .collect(),
            ),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    }))
}

/// A headless service.
pub fn headless(namespace: &str, name: &str) -> Object {
    Object::Service(Box::new(Service {
        metadata: meta(namespace, name),
        spec: Some(ServiceSpec {
            cluster_ip: Some("None".into()),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    }))
}

/// An ExternalName service.
pub fn external_name(namespace: &str, name: &str, target: &str) -> Object {
    Object::Service(Box::new(Service {
        metadata: meta(namespace, name),
        spec: Some(ServiceSpec {
            type_: Some("ExternalName".into()),
            external_name: Some(target.into()),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    }))
}

/// An endpoint `(address, ready, hostname)`.
pub type EndpointSpec<'a> = (&'a str, bool, Option<&'a str>);

/// An EndpointSlice of `service` with these endpoints and ports (all of one address family,
/// the first endpoint's).
pub fn slice(
    namespace: &str,
    name: &str,
    service: &str,
    endpoints: &[EndpointSpec<'_>],
    ports: &[PortSpec<'_>],
) -> Object {
    let mut metadata = meta(namespace, name);
    metadata.labels = Some([("kubernetes.io/service-name".to_owned(), service.to_owned())].into());
    let ipv6 = endpoints
        .first()
        .is_some_and(|(address, _, _)| address.contains(':'));
    Object::EndpointSlice(Box::new(EndpointSlice {
        metadata,
        address_type: if ipv6 { "IPv6" } else { "IPv4" }.into(),
        endpoints: endpoints
            .iter()
            .map(|(address, ready, hostname)| Endpoint {
                addresses: vec![(*address).into()],
                conditions: Some(EndpointConditions {
                    ready: Some(*ready),
                    ..EndpointConditions::default()
                }),
                hostname: hostname.map(Into::into),
                ..Endpoint::default()
            })
            .collect(),
        ports: Some(
            ports
                .iter()
                .map(|(name, protocol, port)| EndpointPort {
                    name: Some((*name).into()),
                    protocol: Some((*protocol).into()),
                    port: Some(*port),
                    ..EndpointPort::default()
                })
                .collect(),
        ),
    }))
}

/// A namespace.
pub fn namespace(name: &str) -> Object {
    Object::Namespace(Box::new(Namespace {
        metadata: ObjectMeta {
            name: Some(name.into()),
            ..ObjectMeta::default()
        },
        ..Namespace::default()
    }))
}

/// The events of a complete listing of `objects`, then `Synced`.
pub fn listing(objects: Vec<Object>) -> Vec<Event> {
    let kinds = [Kind::Service, Kind::EndpointSlice, Kind::Namespace];
    let mut events: Vec<Event> = kinds.iter().map(|kind| Event::Relisting(*kind)).collect();
    events.extend(objects.into_iter().map(Event::Applied));
    events.extend(kinds.iter().map(|kind| Event::Listed(*kind)));
    events.push(Event::Synced);
    events
}

/// A cluster source whose events the test sends.
pub struct FakeSource {
    receiver: Mutex<Option<mpsc::Receiver<Event>>>,
}

impl FakeSource {
    /// A source, and the sender that feeds it.
    pub fn new() -> (Self, mpsc::Sender<Event>) {
        let (sender, receiver) = mpsc::channel(1024);
        (
            FakeSource {
                receiver: Mutex::new(Some(receiver)),
            },
            sender,
        )
    }
}

impl ClusterSource for FakeSource {
    fn watch(&self, kinds: &[Kind]) -> mpsc::Receiver<Event> {
        assert!(kinds.contains(&Kind::Service) && kinds.contains(&Kind::EndpointSlice));
        self.receiver.lock().unwrap().take().expect("watched once")
    }
}

/// A question.
pub fn question(name: &str, qtype: RecordType) -> Question {
    Question::new(Name::from_ascii(name).unwrap(), qtype)
}

/// The data of `records` as text (`10.96.0.10`, `0 100 80 web.default.svc.cluster.local.`).
pub fn data(records: &[Record]) -> Vec<String> {
    records.iter().map(|record| record.data.to_string()).collect()
}

/// A query packet for `name` and `qtype`, with an OPT record announcing `edns` when given.
pub fn query(name: &str, qtype: RecordType, edns: Option<u16>) -> Vec<u8> {
    let mut message = Message::query();
    message.metadata.recursion_desired = true;
    message.add_query(Query::query(Name::from_ascii(name).unwrap(), qtype));
    if let Some(payload) = edns {
        let mut opt = Edns::new();
        opt.set_max_payload(payload);
        message.set_edns(opt);
    }
    message.to_vec().unwrap()
}

/// How long a test waits for any answer.
pub const PATIENCE: Duration = Duration::from_secs(10);

/// Sends `packet` over UDP to `server` and returns the answer.
pub async fn ask_udp(server: SocketAddr, packet: &[u8]) -> Message {
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    socket.send_to(packet, server).await.unwrap();
    let mut buffer = vec![0; 65535];
    let (length, _) = tokio::time::timeout(PATIENCE, socket.recv_from(&mut buffer))
        .await
        .expect("an answer over UDP")
        .unwrap();
    Message::from_vec(&buffer[..length]).unwrap()
}

/// Sends `packets` over one TCP connection to `server` and returns their answers.
pub async fn ask_tcp(server: SocketAddr, packets: &[Vec<u8>]) -> Vec<Message> {
    let mut stream = tokio::net::TcpStream::connect(server).await.unwrap();
    let mut answers = Vec::new();
    for packet in packets {
        let length = u16::try_from(packet.len()).unwrap();
        stream.write_all(&length.to_be_bytes()).await.unwrap();
        stream.write_all(packet).await.unwrap();
        let answer = tokio::time::timeout(PATIENCE, async {
            let length = stream.read_u16().await?;
            let mut buffer = vec![0; usize::from(length)];
            stream.read_exact(&mut buffer).await?;
            std::io::Result::Ok(buffer)
        })
        .await
        .expect("an answer over TCP")
        .unwrap();
        answers.push(Message::from_vec(&answer).unwrap());
    }
    answers
}

/// How a stand-in upstream answers a query.
pub type Respond = Arc<dyn Fn(&Message) -> Message + Send + Sync>;

/// A stand-in upstream DNS server on 127.0.0.1, over UDP and TCP on the same port.
pub struct StubUpstream {
    /// Where it listens.
    pub address: SocketAddr,
    /// How many queries it received, over either transport.
    pub queries: Arc<AtomicUsize>,
}

impl StubUpstream {
    /// Starts answering with `respond` (on the current runtime).
    pub async fn start(respond: Respond) -> Self {
        let udp = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let address = udp.local_addr().unwrap();
        let tcp = TcpListener::bind(address).await.unwrap();
        let queries = Arc::new(AtomicUsize::new(0));
        let (counted, answer) = (queries.clone(), respond.clone());
        tokio::spawn(async move {
            let mut buffer = vec![0; 65535];
            while let Ok((length, client)) = udp.recv_from(&mut buffer).await {
                counted.fetch_add(1, Ordering::SeqCst);
                let Ok(query) = Message::from_vec(&buffer[..length]) else {
                    continue;
                };
                let _ = udp.send_to(&answer(&query).to_vec().unwrap(), client).await;
            }
        });
        let counted = queries.clone();
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = tcp.accept().await {
                counted.fetch_add(1, Ordering::SeqCst);
                let length = stream.read_u16().await.unwrap();
                let mut buffer = vec![0; usize::from(length)];
                stream.read_exact(&mut buffer).await.unwrap();
                let mut reply = respond(&Message::from_vec(&buffer).unwrap());
                reply.metadata.truncation = false;
                let bytes = reply.to_vec().unwrap();
                stream
                    .write_all(&u16::try_from(bytes.len()).unwrap().to_be_bytes())
                    .await
                    .unwrap();
                stream.write_all(&bytes).await.unwrap();
            }
        });
        StubUpstream { address, queries }
    }

    /// How many queries it received.
    pub fn queries(&self) -> usize {
        self.queries.load(Ordering::SeqCst)
    }
}

/// The skeleton of an answer to `query`: same ID and question, recursion available.
pub fn reply_to(query: &Message) -> Message {
    let mut reply = Message::new(query.metadata.id, MessageType::Response, OpCode::Query);
    reply.metadata.recursion_desired = query.metadata.recursion_desired;
    reply.metadata.recursion_available = true;
    reply.add_queries(query.queries.clone());
    reply
}
