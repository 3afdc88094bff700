//! Where an answer comes from: the cluster zone, the static zones, the cache of forwarded
//! answers, or the upstreams, tried in that order.
//!
//! An alias (an ExternalName service's CNAME) is followed to its target through the same
//! sources, so the client gets the CNAME and the target's records in one answer: stub
//! resolvers such as glibc's do not chase CNAMEs themselves. Chains are cut after eight
//! aliases (CoreDNS's limit), which also ends loops. Everything up to the upstreams is
//! answered without waiting ([`Resolver::resolve`]); only questions for the upstreams take an
//! asynchronous step ([`Resolver::forward`]).

use std::sync::Arc;
use std::time::Instant;

use hickory_proto::op::ResponseCode;

use crate::answer::{Answer, Question};
use crate::cache::Cache;
use crate::cluster::ClusterZone;
use crate::forward::Forwarder;
use crate::metrics::Counters;
use crate::static_zone::StaticZones;

/// The most aliases followed for one question.
const MAX_ALIASES: usize = 8;

/// How far a question got without leaving the server.
#[derive(Debug)]
pub enum Resolution {
    /// The answer.
    Answered(Answer),
    /// The upstreams must be asked.
    Forward(Box<Forwarding>),
}

/// A question for the upstreams, and the aliases that led to it.
#[derive(Debug)]
pub struct Forwarding {
    /// What to ask.
    question: Question,
    /// The answer so far, when the question is an alias's target: its CNAMEs go first.
    aliases: Option<Answer>,
}

/// The sources of answers.
pub struct Resolver {
    cluster: Option<Arc<ClusterZone>>,
    statics: StaticZones,
    cache: Cache,
    forwarder: Option<Forwarder>,
}

impl Resolver {
    /// A resolver answering from these sources (no cluster zone with `--no-cluster`, no
    /// forwarder with `--no-forward`).
    pub fn new(
        cluster: Option<Arc<ClusterZone>>,
        statics: StaticZones,
        cache: Cache,
        forwarder: Option<Forwarder>,
    ) -> Self {
        Resolver {
            cluster,
            statics,
            cache,
            forwarder,
        }
    }

    /// The cluster zone, if the server serves one.
    pub fn cluster(&self) -> Option<&ClusterZone> {
        self.cluster.as_deref()
    }

    /// The cache.
    pub fn cache(&self) -> &Cache {
        &self.cache
    }

    /// The upstreams, if the server forwards.
    pub fn forwarder(&self) -> Option<&Forwarder> {
        self.forwarder.as_ref()
    }

    /// Answers `question` from what the server holds, or says what to ask the upstreams.
    pub fn resolve(&self, question: &Question, now: Instant, counters: &Counters) -> Resolution {
        let mut answer: Option<Answer> = None;
        let mut target: Option<Question> = None;
        for _ in 0..=MAX_ALIASES {
            let asked = target.as_ref().unwrap_or(question);
            let Some(found) = self.held(asked, now, counters) else {
                return match self.forwarder {
                    Some(_) => Resolution::Forward(Box::new(Forwarding {
                        question: asked.clone(),
                        aliases: answer,
                    })),
                    // Nowhere to ask: the aliases alone, or a refusal.
                    None => {
                        Resolution::Answered(answer.unwrap_or_else(|| Answer::error(ResponseCode::Refused)))
                    }
                };
            };
            let next = found.alias.clone();
            answer = Some(match answer {
                None => found,
                Some(aliases) => followed(aliases, found),
            });
            match next {
                Some(name) => target = Some(Question::new(name, question.qtype)),
                None => break,
            }
        }
        let mut answer = answer.unwrap_or_else(|| Answer::error(ResponseCode::ServFail));
        answer.alias = None;
        Resolution::Answered(answer)
    }

    /// What the zones or the cache hold for `question`.
    fn held(&self, question: &Question, now: Instant, counters: &Counters) -> Option<Answer> {
        if let Some(answer) = self.cluster.as_ref().and_then(|zone| zone.answer(question)) {
            return Some(answer);
        }
        if let Some(answer) = self.statics.answer(question) {
            return Some(answer);
        }
        let cached = self.cache.get(question, now);
        counters.cache_lookup(cached.is_some());
        cached
    }

    /// Asks the upstreams, keeps their answer in the cache, and puts the aliases that led to
    /// the question before it. Every upstream failing is SERVFAIL.
    pub async fn forward(&self, forwarding: Forwarding) -> Answer {
        let Some(forwarder) = &self.forwarder else {
            return Answer::error(ResponseCode::Refused);
        };
        let answer = match forwarder.resolve(&forwarding.question).await {
            Ok(answer) => {
                self.cache.insert(&forwarding.question, &answer, Instant::now());
                answer
            }
            Err(_) => return Answer::error(ResponseCode::ServFail),
        };
        match forwarding.aliases {
            Some(aliases) => followed(aliases, answer),
            None => answer,
        }
    }
}

/// The answer so far, followed by the answer for its alias's target: the target decides the
/// response code and the other sections (RFC 6604: NXDOMAIN at the end of a chain is the
/// chain's), the first name decides whether the answer is authoritative.
fn followed(aliases: Answer, target: Answer) -> Answer {
    let mut answers = aliases.answers;
    answers.extend(target.answers);
    Answer {
        rcode: target.rcode,
        authoritative: aliases.authoritative,
        answers,
        authorities: target.authorities,
        additionals: target.additionals,
        alias: target.alias,
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Instant;

    use hickory_proto::op::ResponseCode;
    use hickory_proto::rr::RecordType;

    use super::*;
    use crate::cluster::ZoneUpdater;
    use crate::testing::{data, external_name, listing, namespace, question, service};

    fn resolver(objects: Vec<podnet_model::Object>, statics: &[&str], forwarding: bool) -> Resolver {
        let zone = Arc::new(ClusterZone::new("cluster.local", 5).unwrap());
        let mut updater = ZoneUpdater::new(zone.clone());
        for event in listing(objects) {
            updater.apply(&event);
        }
        updater.publish();
        let records: Vec<_> = statics.iter().map(|record| record.parse().unwrap()).collect();
        let forwarder = forwarding.then(|| Forwarder::new(&["192.0.2.53:53".parse().unwrap()]));
        Resolver::new(
            Some(zone),
            StaticZones::new(&records, 60),
            Cache::new(100),
            forwarder,
        )
    }

    fn answered(resolver: &Resolver, name: &str, qtype: RecordType) -> Answer {
        match resolver.resolve(&question(name, qtype), Instant::now(), &Counters::default()) {
            Resolution::Answered(answer) => answer,
            Resolution::Forward(forwarding) => panic!("{name} was to be forwarded: {forwarding:?}"),
        }
    }

    #[test]
    fn an_alias_is_followed_into_the_cluster_and_the_static_zones() {
        let resolver = resolver(
            vec![
                namespace("default"),
                service("default", "web", "10.96.0.10", &[("http", "TCP", 80)]),
                external_name("default", "inside", "web.default.svc.cluster.local"),
                external_name("default", "outside", "www.example.com"),
                external_name("default", "missing", "nope.example.com"),
            ],
            &["www.example.com=192.0.2.10"],
            false,
        );
        let inside = answered(&resolver, "inside.default.svc.cluster.local.", RecordType::A);
        assert_eq!(
            data(&inside.answers),
            ["web.default.svc.cluster.local.", "10.96.0.10"]
        );
        assert_eq!(inside.rcode, ResponseCode::NoError);
        assert!(inside.authoritative);

        let outside = answered(&resolver, "outside.default.svc.cluster.local.", RecordType::A);
        assert_eq!(data(&outside.answers), ["www.example.com.", "192.0.2.10"]);
        assert_eq!(outside.answers[1].ttl, 60, "the target's own TTL");

        let missing = answered(&resolver, "missing.default.svc.cluster.local.", RecordType::A);
        assert_eq!(
            missing.rcode,
            ResponseCode::NXDomain,
            "the end of the chain decides (RFC 6604)"
        );
        assert_eq!(data(&missing.answers), ["nope.example.com."]);
        assert_eq!(missing.authorities[0].name.to_string(), "example.com.");
    }

    #[test]
    fn alias_loops_end() {
        let resolver = resolver(
            vec![
                external_name("default", "ping", "pong.default.svc.cluster.local"),
                external_name("default", "pong", "ping.default.svc.cluster.local"),
            ],
            &[],
            false,
        );
        let answer = answered(&resolver, "ping.default.svc.cluster.local.", RecordType::A);
        assert_eq!(answer.answers.len(), MAX_ALIASES + 1);
        assert!(
            answer
                .answers
                .iter()
                .all(|record| record.record_type() == RecordType::CNAME)
        );
    }

    #[test]
    fn names_held_nowhere_are_forwarded_or_refused() {
        let forwarding = resolver(
            vec![external_name("default", "out", "www.example.org")],
            &[],
            true,
        );
        let counters = Counters::default();
        match forwarding.resolve(
            &question("www.example.org.", RecordType::A),
            Instant::now(),
            &counters,
        ) {
            Resolution::Forward(forwarding) => assert!(forwarding.aliases.is_none()),
            Resolution::Answered(answer) => panic!("answered {answer:?}"),
        }
        match forwarding.resolve(
            &question("out.default.svc.cluster.local.", RecordType::A),
            Instant::now(),
            &counters,
        ) {
            Resolution::Forward(forwarding) => {
                assert_eq!(forwarding.question.name.to_string(), "www.example.org.");
                assert_eq!(data(&forwarding.aliases.unwrap().answers), ["www.example.org."]);
            }
            Resolution::Answered(answer) => panic!("answered {answer:?}"),
        }
        let refusing = resolver(Vec::new(), &[], false);
        let refused = answered(&refusing, "www.example.org.", RecordType::A);
        assert_eq!(refused.rcode, ResponseCode::Refused);
    }
}
