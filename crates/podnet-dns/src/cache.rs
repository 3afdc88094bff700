//! The cache of forwarded answers, as CoreDNS's `cache` plugin keeps it.
//!
//! An upstream's answer may be kept as long as its records' TTLs say (the smallest of them),
//! at most an hour. A negative answer (NXDOMAIN, or NODATA: no record of that type) is kept as
//! long as its zone's SOA says (RFC 2308: the smaller of the SOA's TTL and its minimum), at
//! most half an hour; one without an SOA is not kept. Failures are never kept. Answers served
//! from the cache carry their TTLs minus the time spent in it, so a client's own cache expires
//! with this one.
//!
//! The cache is split into shards, each behind its own lock held only for a lookup or an
//! insertion, so threads rarely meet. A full shard drops an expired entry, or else an
//! arbitrary one (CoreDNS evicts at random too).

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::{RData, Record, RecordType};

use crate::answer::{Answer, Question};

/// The longest a positive answer is kept (CoreDNS's default).
pub const MAX_SUCCESS_TTL: u32 = 3600;
/// The longest a negative answer is kept (CoreDNS's default).
pub const MAX_DENIAL_TTL: u32 = 1800;
/// How many shards the cache has.
const SHARDS: usize = 64;

/// A question as a cache key: type, then the lower-cased name.
type Key = Box<[u8]>;

/// A key built on the stack, to look up without allocating.
struct LookupKey {
    bytes: [u8; 2 + 255],
    len: usize,
}

impl LookupKey {
    fn of(question: &Question) -> Self {
        let name = question.lower.as_str().as_bytes();
        let mut key = LookupKey {
            bytes: [0; 2 + 255],
            len: 2 + name.len(),
        };
        key.bytes[..2].copy_from_slice(&u16::from(question.qtype).to_be_bytes());
        key.bytes[2..key.len].copy_from_slice(name);
        key
    }

    fn as_slice(&self) -> &[u8] {
        &self.bytes[..self.len]
    }
}

/// An answer in the cache.
#[derive(Debug)]
struct Entry {
    rcode: ResponseCode,
    answers: Vec<Record>,
    authorities: Vec<Record>,
    stored: Instant,
    /// How long it may be served, in seconds.
    lifetime: u32,
}

/// Forwarded answers, by question.
#[derive(Debug)]
pub struct Cache {
    shards: Box<[Mutex<HashMap<Key, Entry>>]>,
    per_shard: usize,
    spread: RandomState,
}

impl Cache {
    /// A cache of about `capacity` answers (none when 0).
    pub fn new(capacity: usize) -> Self {
        Cache {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            per_shard: capacity.div_ceil(SHARDS),
            spread: RandomState::new(),
        }
    }

    fn shard(&self, key: &[u8]) -> &Mutex<HashMap<Key, Entry>> {
        let hash = self.spread.hash_one(key);
        &self.shards[((hash >> 32) as usize) % SHARDS]
    }

    /// The answer kept for `question`, its TTLs lowered by its time in the cache; `None` when
    /// there is none, or it expired.
    pub fn get(&self, question: &Question, now: Instant) -> Option<Answer> {
        if self.per_shard == 0 {
            return None;
        }
        let key = LookupKey::of(question);
        let key = key.as_slice();
        let mut shard = self.shard(key).lock().ok()?;
        let entry = shard.get(key)?;
        let age = u32::try_from(now.saturating_duration_since(entry.stored).as_secs()).unwrap_or(u32::MAX);
        if age >= entry.lifetime {
            shard.remove(key);
            return None;
        }
        let served = |records: &[Record]| -> Vec<Record> {
            records
                .iter()
                .map(|record| {
                    let mut record = record.clone();
                    record.ttl = record.ttl.min(entry.lifetime).saturating_sub(age);
                    if record.record_type() != RecordType::SOA {
                        // The records of the answer are the question's, whatever case the
                        // first asker used.
                        if record.name.eq_ignore_root(&question.name) {
                            record.name = question.name.clone();
                        }
                    }
                    record
                })
                .collect()
        };
        Some(Answer {
            rcode: entry.rcode,
            authoritative: false,
            answers: served(&entry.answers),
            authorities: served(&entry.authorities),
            additionals: Vec::new(),
            alias: None,
        })
    }

    /// Keeps `answer`, the upstreams' answer to `question`, if it may be kept.
    pub fn insert(&self, question: &Question, answer: &Answer, now: Instant) {
        if self.per_shard == 0 {
            return;
        }
        let Some(lifetime) = lifetime(answer) else { return };
        let key: Key = LookupKey::of(question).as_slice().into();
        let Ok(mut shard) = self.shard(&key).lock() else {
            return;
        };
        if shard.len() >= self.per_shard && !shard.contains_key(&key) {
            let victim = shard
                .iter()
                .find(|(_, entry)| {
                    now.saturating_duration_since(entry.stored) >= Duration::from_secs(entry.lifetime.into())
                })
                .or_else(|| shard.iter().next())
                .map(|(key, _)| key.clone());
            if let Some(victim) = victim {
                shard.remove(&victim);
            }
        }
        shard.insert(
            key,
            Entry {
                rcode: answer.rcode,
                answers: answer.answers.clone(),
                authorities: answer.authorities.clone(),
                stored: now,
                lifetime,
            },
        );
    }

    /// How many answers the cache holds (expired ones included until they are dropped).
    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|shard| shard.lock().map_or(0, |shard| shard.len()))
            .sum()
    }
}

/// How long `answer` may be kept, in seconds; `None` when it may not be.
fn lifetime(answer: &Answer) -> Option<u32> {
    let seconds = match answer.rcode {
        ResponseCode::NoError if !answer.answers.is_empty() => answer
            .answers
            .iter()
            .chain(&answer.authorities)
            .map(|record| record.ttl)
            .min()?
            .min(MAX_SUCCESS_TTL),
        ResponseCode::NoError | ResponseCode::NXDomain => answer
            .authorities
            .iter()
            .find_map(|record| match &record.data {
                RData::SOA(soa) => Some(record.ttl.min(soa.minimum)),
                _ => None,
            })?
            .min(MAX_DENIAL_TTL),
        _ => return None,
    };
    (seconds > 0).then_some(seconds)
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use hickory_proto::rr::Name;
    use hickory_proto::rr::rdata::{A, SOA};

    use super::*;

    fn question(name: &str) -> Question {
        Question::new(Name::from_ascii(name).unwrap(), RecordType::A)
    }

    fn address(name: &str, ttl: u32) -> Record {
        Record::from_rdata(
            Name::from_ascii(name).unwrap(),
            ttl,
            RData::A(A(Ipv4Addr::new(192, 0, 2, 10))),
        )
    }

    fn soa(ttl: u32, minimum: u32) -> Record {
        let apex = Name::from_ascii("example.com.").unwrap();
        let soa = SOA::new(apex.clone(), apex.clone(), 1, 7200, 1800, 86400, minimum);
        Record::from_rdata(apex, ttl, RData::SOA(soa))
    }

    #[test]
    fn answers_are_served_with_their_remaining_ttl_until_it_runs_out() {
        let cache = Cache::new(100);
        let start = Instant::now();
        let asked = question("www.example.com.");
        cache.insert(
            &asked,
            &Answer::records(vec![address("www.example.com.", 60)]),
            start,
        );

        let later = cache
            .get(&question("WWW.example.com."), start + Duration::from_secs(15))
            .unwrap();
        assert_eq!(later.answers[0].ttl, 45);
        assert!(!later.authoritative);
        assert_eq!(
            later.answers[0].name.to_string(),
            "WWW.example.com.",
            "the asker's case"
        );
        assert!(
            cache.get(&asked, start + Duration::from_secs(60)).is_none(),
            "expired"
        );
        assert_eq!(cache.len(), 0, "an expired answer is dropped");
    }

    #[test]
    fn negative_answers_last_as_their_soa_says_and_failures_are_not_kept() {
        let cache = Cache::new(100);
        let start = Instant::now();
        let missing = question("nowhere.example.com.");
        let nxdomain = Answer {
            rcode: ResponseCode::NXDomain,
            authorities: vec![soa(300, 30)],
            ..Answer::records(Vec::new())
        };
        cache.insert(&missing, &nxdomain, start);
        let cached = cache.get(&missing, start + Duration::from_secs(10)).unwrap();
        assert_eq!(cached.rcode, ResponseCode::NXDomain);
        assert_eq!(cached.authorities[0].ttl, 20, "min(SOA TTL, minimum) minus 10 s");
        assert!(cache.get(&missing, start + Duration::from_secs(30)).is_none());

        let without_soa = question("bare.example.com.");
        cache.insert(
            &without_soa,
            &Answer {
                rcode: ResponseCode::NXDomain,
                ..Answer::records(Vec::new())
            },
            start,
        );
        assert!(
            cache.get(&without_soa, start).is_none(),
            "no SOA, no negative caching"
        );
        let failing = question("failing.example.com.");
        cache.insert(&failing, &Answer::error(ResponseCode::ServFail), start);
        assert!(cache.get(&failing, start).is_none());
    }

    #[test]
    fn long_ttls_are_capped_and_a_full_cache_makes_room() {
        let cache = Cache::new(SHARDS);
        let start = Instant::now();
        let long = question("long.example.com.");
        cache.insert(
            &long,
            &Answer::records(vec![address("long.example.com.", 86400)]),
            start,
        );
        let served = cache.get(&long, start).unwrap();
        assert_eq!(served.answers[0].ttl, MAX_SUCCESS_TTL);
        for index in 0..10 * SHARDS {
            let name = format!("n{index}.example.com.");
            cache.insert(
                &question(&name),
                &Answer::records(vec![address(&name, 60)]),
                start,
            );
        }
        assert!(cache.len() <= SHARDS, "{}", cache.len());
    }
}
