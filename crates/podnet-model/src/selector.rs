//! Label selectors (`metav1.LabelSelector`) as the API server evaluates them: every
//! `matchLabels` pair and every `matchExpressions` requirement must hold; an empty selector
//! selects everything.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

/// Whether `selector` selects an object with `labels`.
pub fn selects(selector: &LabelSelector, labels: Option<&BTreeMap<String, String>>) -> bool {
    let value = |key: &str| labels.and_then(|labels| labels.get(key));
    let pairs = selector
        .match_labels
        .iter()
        .flatten()
        .all(|(key, wanted)| value(key) == Some(wanted));
    pairs
        && selector.match_expressions.iter().flatten().all(|requirement| {
            let values = requirement.values.as_deref().unwrap_or_default();
            let found = value(&requirement.key);
            match requirement.operator.as_str() {
                "In" => found.is_some_and(|found| values.contains(found)),
                "NotIn" => found.is_none_or(|found| !values.contains(found)),
                "Exists" => found.is_some(),
                "DoesNotExist" => found.is_none(),
                // Refused by validation; selecting nothing is the safe reading.
                _ => false,
            }
        })
}

#[cfg(test)]
mod tests {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement;

    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn requirement(key: &str, operator: &str, values: &[&str]) -> LabelSelectorRequirement {
        LabelSelectorRequirement {
            key: key.into(),
            operator: operator.into(),
            values: (!values.is_empty()).then(|| values.iter().map(|v| (*v).to_owned()).collect()),
        }
    }

    #[test]
    fn labels_and_expressions_must_all_hold() {
        let pod = labels(&[("app", "web"), ("tier", "front")]);
        assert!(selects(&LabelSelector::default(), None), "empty selects all");
        assert!(selects(&LabelSelector::default(), Some(&pod)));
        let by_label = LabelSelector {
            match_labels: Some(labels(&[("app", "web")])),
            ..LabelSelector::default()
        };
        assert!(selects(&by_label, Some(&pod)));
        assert!(!selects(&by_label, None));
        for (requirement, expected) in [
            (requirement("tier", "In", &["front", "back"]), true),
            (requirement("tier", "NotIn", &["front"]), false),
            (requirement("zone", "NotIn", &["a"]), true),
            (requirement("tier", "Exists", &[]), true),
            (requirement("tier", "DoesNotExist", &[]), false),
            (requirement("tier", "Gt", &["1"]), false),
        ] {
            let selector = LabelSelector {
                match_labels: Some(labels(&[("app", "web")])),
                match_expressions: Some(vec![requirement.clone()]),
            };
            assert_eq!(selects(&selector, Some(&pod)), expected, "{requirement:?}");
        }
    }
}
