//! DynamoDB JSON to plain JSON, like `AWS.DynamoDB.Converter.unmarshall`.

use serde_json::{Map, Number, Value};

/// Reads an item in DynamoDB JSON (`{"Id":{"N":"101"},"Tags":{"SS":["a"]}}`,
/// the text of a stream record's keys and images) as plain JSON
/// (`{"Id":101,"Tags":["a"]}`).
///
/// `S` is a string, `N` a number (an integer when it is one), `B` its
/// base64 text, `BOOL` and `NULL` themselves, `M` an object, `L` an array,
/// and the sets `SS`, `NS`, `BS` arrays. Errors name the attribute that is
/// not DynamoDB JSON.
///
/// ```
/// use triggerfish_sdk::dynamodb_stream::unmarshall;
/// let item = unmarshall(r#"{"Id":{"N":"101"},"Message":{"S":"New item!"}}"#).unwrap();
/// assert_eq!(item, serde_json::json!({"Id": 101, "Message": "New item!"}));
/// ```
pub fn unmarshall(text: &str) -> Result<Value, String> {
    let item: Value =
        serde_json::from_str(text).map_err(|e| format!("the item is not JSON: {e}"))?;
    let Value::Object(attributes) = item else {
        return Err("the item must be a JSON object of attributes".to_owned());
    };
    attributes_of(attributes, "").map(Value::Object)
}

fn attributes_of(attributes: Map<String, Value>, path: &str) -> Result<Map<String, Value>, String> {
    attributes
        .into_iter()
        .map(|(name, value)| {
            let path = if path.is_empty() {
                name.clone()
            } else {
                format!("{path}.{name}")
            };
            Ok((name, attribute(value, &path)?))
        })
        .collect()
}

/// One attribute value: an object with exactly one type key.
fn attribute(value: Value, path: &str) -> Result<Value, String> {
    let bad = |what: &str| format!("attribute `{path}`: {what}");
    let Value::Object(typed) = value else {
        return Err(bad("expected an object such as {\"S\": \"...\"}"));
    };
    let mut entries = typed.into_iter();
    let (Some((kind, inner)), None) = (entries.next(), entries.next()) else {
        return Err(bad("expected exactly one type key"));
    };
    let strings = |inner: Value| -> Result<Vec<String>, String> {
        match inner {
            Value::Array(items) => items
                .into_iter()
                .map(|item| match item {
                    Value::String(s) => Ok(s),
                    _ => Err(bad(&format!("{kind} holds a non-string"))),
                })
                .collect(),
            _ => Err(bad(&format!("{kind} must be an array"))),
        }
    };
    Ok(match (kind.as_str(), inner) {
        ("S" | "B", Value::String(s)) => Value::String(s),
        ("N", Value::String(n)) => number(&n).ok_or_else(|| bad("N is not a number"))?,
        ("BOOL", Value::Bool(b)) => Value::Bool(b),
        ("NULL", _) => Value::Null,
        ("M", Value::Object(map)) => Value::Object(attributes_of(map, path)?),
        ("L", Value::Array(items)) => Value::Array(
            items
                .into_iter()
                .enumerate()
                .map(|(i, item)| attribute(item, &format!("{path}[{i}]")))
                .collect::<Result<_, _>>()?,
        ),
        ("SS" | "BS", inner) => {
            Value::Array(strings(inner)?.into_iter().map(Value::String).collect())
        }
        ("NS", inner) => Value::Array(
            strings(inner)?
                .iter()
                .map(|n| number(n).ok_or_else(|| bad("NS holds a non-number")))
                .collect::<Result<_, _>>()?,
        ),
        (kind, _) => {
            return Err(bad(&format!(
                "{kind} is not a DynamoDB type with that value"
            )))
        }
    })
}

fn number(text: &str) -> Option<Value> {
    if let Ok(n) = text.parse::<i64>() {
        return Some(Value::from(n));
    }
    if let Ok(n) = text.parse::<u64>() {
        return Some(Value::from(n));
    }
    text.parse::<f64>()
        .ok()
        .and_then(Number::from_f64)
        .map(Value::Number)
}

impl crate::dynamodb_stream::EventName {
    /// The name as DynamoDB writes it: `INSERT`, `MODIFY` or `REMOVE`.
    pub fn as_str(&self) -> &'static str {
        use crate::dynamodb_stream::EventName;
        match self {
            EventName::Insert => "INSERT",
            EventName::Modify => "MODIFY",
            EventName::Remove => "REMOVE",
        }
    }
}

impl std::fmt::Display for crate::dynamodb_stream::EventName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn every_type_reads_as_plain_json() {
        let item = json!({
            "s": {"S": "text"}, "n": {"N": "-1.5"}, "i": {"N": "42"}, "b": {"B": "AAE="},
            "t": {"BOOL": true}, "z": {"NULL": true},
            "m": {"M": {"inner": {"L": [{"S": "x"}, {"N": "1"}]}}},
            "ss": {"SS": ["a", "b"]}, "ns": {"NS": ["1", "2.5"]}, "bs": {"BS": ["AA=="]}
        });
        assert_eq!(
            unmarshall(&item.to_string()).unwrap(),
            json!({
                "s": "text", "n": -1.5, "i": 42, "b": "AAE=", "t": true, "z": null,
                "m": {"inner": ["x", 1]}, "ss": ["a", "b"], "ns": [1, 2.5], "bs": ["AA=="]
            })
        );
    }

    #[test]
    fn errors_name_the_attribute() {
        let error = unmarshall(r#"{"m":{"M":{"bad":{"N":"ten"}}}}"#).unwrap_err();
        assert_eq!(error, "attribute `m.bad`: N is not a number");
        assert!(unmarshall("[]").is_err());
        assert!(unmarshall(r#"{"a":{"S":"x","N":"1"}}"#).is_err());
    }
}
