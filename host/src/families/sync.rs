//! Cognito Sync events: `event` is the read-only top of the event, and
//! `datasetRecords` is what plugins change. A plugin returns the records
//! it changes: a returned key replaces its record or adds one, and a key
//! left out stays as it was (the seed's "omitted records are ignored").

use super::Part;
use std::collections::HashMap;
use wasmtime::component::Val;

pub(super) fn part(param: &str) -> Part {
    match param {
        "records" => Part::Carried("datasetRecords"),
        _ => Part::Top,
    }
}

/// Merges the records a plugin returned into the current ones, by key, in
/// time linear in both lists (a plugin may return as many records as its
/// output limit allows).
pub(super) fn merge_records(current: &mut Val, returned: Val) {
    let (Val::List(current), Val::List(returned)) = (current, returned) else {
        return;
    };
    let mut index: HashMap<String, usize> = current
        .iter()
        .enumerate()
        .filter_map(|(i, entry)| Some((key_of(entry)?.to_owned(), i)))
        .collect();
    for entry in returned {
        match key_of(&entry).and_then(|key| index.get(key)) {
            Some(&at) => current[at] = entry,
            None => {
                if let Some(key) = key_of(&entry) {
                    index.insert(key.to_owned(), current.len());
                }
                current.push(entry);
            }
        }
    }
}

/// The key of a `(key, record)` entry.
fn key_of(entry: &Val) -> Option<&str> {
    match entry {
        Val::Tuple(pair) => match pair.first() {
            Some(Val::String(key)) => Some(key),
            _ => None,
        },
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(key: &str, value: &str) -> Val {
        Val::Tuple(vec![Val::String(key.into()), Val::String(value.into())])
    }

    #[test]
    fn returned_keys_replace_or_add_and_others_stay() {
        let mut current = Val::List(vec![entry("a", "1"), entry("b", "2")]);
        merge_records(
            &mut current,
            Val::List(vec![entry("b", "20"), entry("c", "3"), entry("c", "30")]),
        );
        assert_eq!(
            current,
            Val::List(vec![entry("a", "1"), entry("b", "20"), entry("c", "30")])
        );
    }

    #[test]
    fn forty_thousand_records_merge_in_linear_time() {
        let many =
            |n: usize, tag: &str| Val::List((0..n).map(|i| entry(&format!("k{i}"), tag)).collect());
        let mut current = many(40_000, "old");
        let started = std::time::Instant::now();
        merge_records(&mut current, many(40_000, "new"));
        assert_eq!(current, many(40_000, "new"));
        // Quadratic merging took 24.7 s for this; linear takes milliseconds.
        // A generous liveness bound, not a speed measurement.
        assert!(started.elapsed() < std::time::Duration::from_secs(5));
    }
}
