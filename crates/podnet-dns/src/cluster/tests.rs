//! The cluster zone's answers, record type by record type, against the specification.

use std::sync::Arc;

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::{Record, RecordType};
use podnet_model::{Event, Kind, Object, ObjectKey};

use super::{ClusterZone, ZoneUpdater};
use crate::answer::Answer;
use crate::names::reverse_name;
use crate::testing::{data, external_name, headless, listing, namespace, question, service, slice};

fn zone_of(objects: Vec<Object>) -> (Arc<ClusterZone>, ZoneUpdater) {
    let zone = Arc::new(ClusterZone::new("cluster.local", 5).unwrap());
    let mut updater = ZoneUpdater::new(zone.clone());
    for event in listing(objects) {
        updater.apply(&event);
    }
    updater.publish();
    assert!(updater.synced());
    (zone, updater)
}

fn ask(zone: &ClusterZone, name: &str, qtype: RecordType) -> Answer {
    zone.answer(&question(name, qtype))
        .unwrap_or_else(|| panic!("the zone answers {name}"))
}

/// Asserts an answer is NXDOMAIN or NODATA with the zone's SOA.
fn assert_negative(answer: &Answer, rcode: ResponseCode, apex: &str) {
    assert_eq!(answer.rcode, rcode, "{answer:?}");
    assert!(answer.answers.is_empty(), "{answer:?}");
    assert!(answer.authoritative);
    let [soa] = answer.authorities.as_slice() else {
        panic!("one SOA in authority: {answer:?}")
    };
    assert_eq!(soa.record_type(), RecordType::SOA);
    assert_eq!(soa.name.to_string(), apex);
}

fn web() -> Vec<Object> {
    vec![
        namespace("default"),
        service(
            "default",
            "web",
            "10.96.0.10",
            &[("http", "TCP", 80), ("", "UDP", 8125), ("DNS", "UDP", 53)],
        ),
    ]
}

fn db() -> Vec<Object> {
    vec![
        namespace("data"),
        headless("data", "db"),
        slice(
            "data",
            "db-v4",
            "db",
            &[
                ("10.244.1.5", true, Some("db-0")),
                ("10.244.2.6", true, None),
                ("10.244.3.7", false, Some("db-2")),
            ],
            &[("pg", "TCP", 5432)],
        ),
    ]
}

#[test]
fn a_clusterip_service_answers_its_address_and_nodata_for_the_other_family() {
    let (zone, _) = zone_of(web());
    let answer = ask(&zone, "web.default.svc.cluster.local.", RecordType::A);
    assert_eq!(answer.rcode, ResponseCode::NoError);
    assert!(answer.authoritative);
    assert_eq!(data(&answer.answers), ["10.96.0.10"]);
    assert_eq!(answer.answers[0].ttl, 5);
    assert_negative(
        &ask(&zone, "web.default.svc.cluster.local.", RecordType::AAAA),
        ResponseCode::NoError,
        "cluster.local.",
    );
    assert_negative(
        &ask(&zone, "web.default.svc.cluster.local.", RecordType::MX),
        ResponseCode::NoError,
        "cluster.local.",
    );
}

#[test]
fn a_dual_stack_service_answers_both_families() {
    let (zone, _) = zone_of(vec![service(
        "default",
        "web",
        "10.96.0.10,fd00::10",
        &[("http", "TCP", 80)],
    )]);
    assert_eq!(
        data(&ask(&zone, "web.default.svc.cluster.local.", RecordType::A).answers),
        ["10.96.0.10"]
    );
    assert_eq!(
        data(&ask(&zone, "web.default.svc.cluster.local.", RecordType::AAAA).answers),
        ["fd00::10"]
    );
}

#[test]
fn names_are_matched_whatever_their_case_and_answered_as_asked() {
    let (zone, _) = zone_of(web());
    let answer = ask(&zone, "WEB.Default.Svc.Cluster.Local.", RecordType::A);
    assert_eq!(data(&answer.answers), ["10.96.0.10"]);
    assert_eq!(
        answer.answers[0].name.to_string(),
        "WEB.Default.Svc.Cluster.Local."
    );
    let srv = ask(
        &zone,
        "_HTTP._Tcp.web.default.svc.cluster.local.",
        RecordType::SRV,
    );
    assert_eq!(srv.answers.len(), 1);
    let dns = ask(&zone, "_dns._udp.web.default.svc.cluster.local.", RecordType::SRV);
    assert_eq!(
        data(&dns.answers),
        ["0 100 53 web.default.svc.cluster.local."],
        "port names are lower-cased"
    );
}

#[test]
fn names_that_do_not_exist_are_nxdomain_and_empty_ones_nodata() {
    let (zone, _) = zone_of(web());
    for missing in [
        "nope.default.svc.cluster.local.",
        "web.nowhere.svc.cluster.local.",
        "nowhere.svc.cluster.local.",
        "_nope._tcp.web.default.svc.cluster.local.",
        "_http._udp.web.default.svc.cluster.local.",
        "x.y.web.default.svc.cluster.local.",
        "foo.cluster.local.",
        "a.b.c.d.e.f.svc.cluster.local.",
    ] {
        assert_negative(
            &ask(&zone, missing, RecordType::A),
            ResponseCode::NXDomain,
            "cluster.local.",
        );
    }
    for empty in [
        "default.svc.cluster.local.",
        "default.pod.cluster.local.",
        "svc.cluster.local.",
        "pod.cluster.local.",
        "cluster.local.",
    ] {
        assert_negative(
            &ask(&zone, empty, RecordType::A),
            ResponseCode::NoError,
            "cluster.local.",
        );
    }
    assert!(
        zone.answer(&question("example.com.", RecordType::A)).is_none(),
        "not the zone's"
    );
}

#[test]
fn named_ports_of_a_clusterip_service_have_srv_records_pointing_at_the_service() {
    let (zone, _) = zone_of(web());
    let srv = ask(
        &zone,
        "_http._tcp.web.default.svc.cluster.local.",
        RecordType::SRV,
    );
    assert_eq!(data(&srv.answers), ["0 100 80 web.default.svc.cluster.local."]);
    assert_eq!(data(&srv.additionals), ["10.96.0.10"], "the target's address");
    assert_eq!(
        srv.additionals[0].name.to_string(),
        "web.default.svc.cluster.local."
    );
    assert_negative(
        &ask(&zone, "_http._tcp.web.default.svc.cluster.local.", RecordType::A),
        ResponseCode::NoError,
        "cluster.local.",
    );
    let every_port = ask(&zone, "web.default.svc.cluster.local.", RecordType::SRV);
    assert_eq!(
        every_port.answers.len(),
        3,
        "CoreDNS answers every port, unnamed ones too"
    );
    assert!(
        data(&every_port.answers)
            .iter()
            .all(|srv| srv.starts_with("0 33 "))
    );
}

#[test]
fn a_headless_service_answers_its_ready_endpoints_by_name() {
    let (zone, _) = zone_of(db());
    let answer = ask(&zone, "db.data.svc.cluster.local.", RecordType::A);
    assert_eq!(
        data(&answer.answers),
        ["10.244.1.5", "10.244.2.6"],
        "ready endpoints only"
    );
    let named = ask(&zone, "db-0.db.data.svc.cluster.local.", RecordType::A);
    assert_eq!(data(&named.answers), ["10.244.1.5"]);
    let dashed = ask(&zone, "10-244-2-6.db.data.svc.cluster.local.", RecordType::A);
    assert_eq!(
        data(&dashed.answers),
        ["10.244.2.6"],
        "no hostname: the address with dashes"
    );
    assert_negative(
        &ask(&zone, "db-2.db.data.svc.cluster.local.", RecordType::A),
        ResponseCode::NXDomain,
        "cluster.local.",
    );
    assert_negative(
        &ask(&zone, "db-0.db.data.svc.cluster.local.", RecordType::AAAA),
        ResponseCode::NoError,
        "cluster.local.",
    );

    let srv = ask(&zone, "_pg._tcp.db.data.svc.cluster.local.", RecordType::SRV);
    assert_eq!(
        data(&srv.answers),
        [
            "0 50 5432 10-244-2-6.db.data.svc.cluster.local.",
            "0 50 5432 db-0.db.data.svc.cluster.local."
        ]
    );
    let additional: Vec<(String, String)> = srv
        .additionals
        .iter()
        .map(|record: &Record| (record.name.to_string(), record.data.to_string()))
        .collect();
    assert_eq!(
        additional,
        [
            (
                "10-244-2-6.db.data.svc.cluster.local.".to_owned(),
                "10.244.2.6".to_owned()
            ),
            (
                "db-0.db.data.svc.cluster.local.".to_owned(),
                "10.244.1.5".to_owned()
            ),
        ]
    );
}

#[test]
fn a_headless_service_without_ready_endpoints_does_not_exist() {
    let (zone, _) = zone_of(vec![
        namespace("data"),
        headless("data", "db"),
        slice(
            "data",
            "db-v4",
            "db",
            &[("10.244.3.7", false, Some("db-2"))],
            &[("pg", "TCP", 5432)],
        ),
    ]);
    for qtype in [RecordType::A, RecordType::AAAA, RecordType::SRV] {
        assert_negative(
            &ask(&zone, "db.data.svc.cluster.local.", qtype),
            ResponseCode::NXDomain,
            "cluster.local.",
        );
    }
}

#[test]
fn reverse_names_of_cluster_ips_and_headless_endpoints_have_ptr_records() {
    let mut objects = web();
    objects.extend(db());
    objects.push(service("default", "v6", "fd00::10", &[("http", "TCP", 80)]));
    let (zone, _) = zone_of(objects);
    let ptr = |address: &str, qtype| {
        zone.answer(&question(
            &format!("{}.", reverse_name(address.parse().unwrap())),
            qtype,
        ))
    };

    let answer = ptr("10.96.0.10", RecordType::PTR).unwrap();
    assert_eq!(data(&answer.answers), ["web.default.svc.cluster.local."]);
    assert!(answer.authoritative);
    let endpoint = ptr("10.244.1.5", RecordType::PTR).unwrap();
    assert_eq!(data(&endpoint.answers), ["db-0.db.data.svc.cluster.local."]);
    let dashed = ptr("10.244.2.6", RecordType::PTR).unwrap();
    assert_eq!(data(&dashed.answers), ["10-244-2-6.db.data.svc.cluster.local."]);
    let v6 = ptr("fd00::10", RecordType::PTR).unwrap();
    assert_eq!(data(&v6.answers), ["v6.default.svc.cluster.local."]);

    assert_negative(
        &ptr("10.96.0.10", RecordType::A).unwrap(),
        ResponseCode::NoError,
        "in-addr.arpa.",
    );
    assert!(
        ptr("10.244.3.7", RecordType::PTR).is_none(),
        "a not-ready endpoint: forwarded"
    );
    assert!(
        ptr("192.0.2.10", RecordType::PTR).is_none(),
        "not the cluster's: forwarded"
    );
}

#[test]
fn an_external_name_service_is_an_alias_to_follow() {
    let (zone, _) = zone_of(vec![
        namespace("default"),
        external_name("default", "search", "WWW.Example.com."),
    ]);
    let answer = ask(&zone, "search.default.svc.cluster.local.", RecordType::A);
    assert_eq!(data(&answer.answers), ["www.example.com."]);
    assert_eq!(answer.answers[0].record_type(), RecordType::CNAME);
    assert_eq!(
        answer.alias.map(|name| name.to_string()).as_deref(),
        Some("www.example.com.")
    );
    let cname = ask(&zone, "search.default.svc.cluster.local.", RecordType::CNAME);
    assert_eq!(data(&cname.answers), ["www.example.com."]);
    assert_eq!(cname.alias, None, "the CNAME itself was asked for");
}

#[test]
fn the_schema_version_and_the_apex_are_answered() {
    let (zone, _) = zone_of(Vec::new());
    let version = ask(&zone, "dns-version.cluster.local.", RecordType::TXT);
    assert_eq!(data(&version.answers), ["1.1.0"]);
    let soa = ask(&zone, "cluster.local.", RecordType::SOA);
    let text = data(&soa.answers);
    assert!(
        text[0].starts_with("ns.dns.cluster.local. hostmaster.cluster.local. "),
        "{text:?}"
    );
    assert!(text[0].ends_with(" 7200 1800 86400 5"), "{text:?}");
    let ns = ask(&zone, "cluster.local.", RecordType::NS);
    assert_eq!(data(&ns.answers), ["ns.dns.cluster.local."]);
}

#[test]
fn pod_names_answer_the_address_they_spell_in_namespaces_that_exist() {
    let (zone, _) = zone_of(vec![namespace("default")]);
    let answer = ask(&zone, "10-244-1-5.default.pod.cluster.local.", RecordType::A);
    assert_eq!(data(&answer.answers), ["10.244.1.5"]);
    let v6 = ask(&zone, "fd00--5.default.pod.cluster.local.", RecordType::AAAA);
    assert_eq!(data(&v6.answers), ["fd00::5"]);
    assert_negative(
        &ask(&zone, "10-244-1-5.default.pod.cluster.local.", RecordType::AAAA),
        ResponseCode::NoError,
        "cluster.local.",
    );
    for missing in [
        "10-244-1-5.nowhere.pod.cluster.local.",
        "web.default.pod.cluster.local.",
        "x.10-244-1-5.default.pod.cluster.local.",
    ] {
        assert_negative(
            &ask(&zone, missing, RecordType::A),
            ResponseCode::NXDomain,
            "cluster.local.",
        );
    }
}

#[test]
fn changes_replace_what_a_service_published() {
    let (zone, mut updater) = zone_of(db());
    // The slice changes: db-0 goes, db-3 comes.
    updater.apply(&Event::Applied(slice(
        "data",
        "db-v4",
        "db",
        &[("10.244.4.8", true, Some("db-3"))],
        &[("pg", "TCP", 5432)],
    )));
    updater.publish();
    assert_eq!(
        data(&ask(&zone, "db.data.svc.cluster.local.", RecordType::A).answers),
        ["10.244.4.8"]
    );
    assert_eq!(
        ask(&zone, "db-0.db.data.svc.cluster.local.", RecordType::A).rcode,
        ResponseCode::NXDomain
    );
    let gone = format!("{}.", reverse_name("10.244.1.5".parse().unwrap()));
    assert!(
        zone.answer(&question(&gone, RecordType::PTR)).is_none(),
        "its PTR went too"
    );

    // The service goes: its names and its endpoints' names go.
    updater.apply(&Event::Deleted(
        Kind::Service,
        ObjectKey {
            namespace: "data".into(),
            name: "db".into(),
        },
    ));
    updater.publish();
    for name in [
        "db.data.svc.cluster.local.",
        "db-3.db.data.svc.cluster.local.",
        "_pg._tcp.db.data.svc.cluster.local.",
    ] {
        assert_eq!(
            ask(&zone, name, RecordType::A).rcode,
            ResponseCode::NXDomain,
            "{name}"
        );
    }
    assert_eq!(
        ask(&zone, "data.svc.cluster.local.", RecordType::A).rcode,
        ResponseCode::NoError
    );

    // A relist without the namespace removes it.
    for event in listing(Vec::new()) {
        updater.apply(&event);
    }
    updater.publish();
    assert_eq!(
        ask(&zone, "data.svc.cluster.local.", RecordType::A).rcode,
        ResponseCode::NXDomain
    );
    assert_eq!(zone.name_count(), 0);
}
