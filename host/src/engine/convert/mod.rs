//! Conversion between Cognito's JSON events and the component-model values
//! of the WIT contract.
//!
//! One set of rules covers every trigger, driven by the types the plugin's
//! export declares:
//! - a WIT field `user-pool-id` is the JSON key `userPoolId` (kebab-case to
//!   camelCase; [`json_name`] lists the one exception Cognito needs);
//! - `list<tuple<string, T>>` is a JSON object, `list<u8>` base64 text (as
//!   Lambda writes bytes: Kinesis data, SQS binary attributes), any other
//!   list an array;
//! - `option<T>` is `null` or a missing key; a missing list is empty and a
//!   missing `bool` is false, as Cognito leaves them out when empty;
//! - an enum is its case name as a string;
//! - a variant is untagged: its case is picked by the JSON value's kind, and
//!   a case named `json` carries any other JSON value as text.
//!
//! Going back, records are written over the JSON they came from, so keys
//! the contract does not model survive untouched.

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use serde_json::{Map, Number, Value};
use std::borrow::Cow;
use wasmtime::component::{Type, Val};

mod error;
mod plan;
pub use error::ConvertError;
pub use plan::Plan;

/// The JSON key of a WIT field name.
pub fn json_name(wit_name: &str) -> Cow<'_, str> {
    match wit_name {
        // Cognito spells this one with its acronyms in capitals.
        "enable-sms-mfa" => Cow::Borrowed("enableSMSMFA"),
        name if !name.contains('-') => Cow::Borrowed(name),
        name => {
            let mut out = String::with_capacity(name.len());
            let mut upper = false;
            for c in name.chars() {
                if c == '-' {
                    upper = true;
                } else if upper {
                    out.push(c.to_ascii_uppercase());
                    upper = false;
                } else {
                    out.push(c);
                }
            }
            Cow::Owned(out)
        }
    }
}

fn kind(json: &Value) -> &'static str {
    match json {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn expected(what: &str, json: &Value) -> ConvertError {
    ConvertError::new(format!("expected {what}, found {}", kind(json)))
}

/// The value type of `list<tuple<string, T>>`, the contract's JSON object.
fn map_value_type(list_element: &Type) -> Option<Type> {
    let Type::Tuple(tuple) = list_element else {
        return None;
    };
    let mut types = tuple.types();
    match (types.next(), types.next(), types.next()) {
        (Some(Type::String), Some(value), None) => Some(value),
        _ => None,
    }
}

fn integer<T: TryFrom<i64> + TryFrom<u64>>(json: &Value, name: &str) -> Result<T, ConvertError> {
    let out_of_range = || ConvertError::new(format!("{json} does not fit in {name}"));
    match json {
        Value::Number(n) => {
            if let Some(u) = n.as_u64() {
                T::try_from(u).map_err(|_| out_of_range())
            } else if let Some(i) = n.as_i64() {
                T::try_from(i).map_err(|_| out_of_range())
            } else {
                Err(ConvertError::new(format!("expected an integer, found {n}")))
            }
        }
        other => Err(expected("an integer", other)),
    }
}

/// Converts `json` (absent when the key is missing) to a value of `ty`.
pub fn to_val(ty: &Type, json: Option<&Value>) -> Result<Val, ConvertError> {
    let present = json.filter(|v| !v.is_null());
    let Some(json) = present else {
        return absent(ty);
    };
    Ok(match ty {
        Type::Bool => Val::Bool(json.as_bool().ok_or_else(|| expected("a boolean", json))?),
        Type::S8 => Val::S8(integer(json, "s8")?),
        Type::U8 => Val::U8(integer(json, "u8")?),
        Type::S16 => Val::S16(integer(json, "s16")?),
        Type::U16 => Val::U16(integer(json, "u16")?),
        Type::S32 => Val::S32(integer(json, "s32")?),
        Type::U32 => Val::U32(integer(json, "u32")?),
        Type::S64 => Val::S64(integer(json, "s64")?),
        Type::U64 => Val::U64(integer(json, "u64")?),
        Type::Float32 => {
            Val::Float32(json.as_f64().ok_or_else(|| expected("a number", json))? as f32)
        }
        Type::Float64 => Val::Float64(json.as_f64().ok_or_else(|| expected("a number", json))?),
        Type::Char => {
            let s = json
                .as_str()
                .ok_or_else(|| expected("a one-character string", json))?;
            let mut chars = s.chars();
            match (chars.next(), chars.next()) {
                (Some(c), None) => Val::Char(c),
                _ => return Err(expected("a one-character string", json)),
            }
        }
        Type::String => Val::String(
            json.as_str()
                .ok_or_else(|| expected("a string", json))?
                .to_owned(),
        ),
        Type::List(list) => {
            let element = list.ty();
            if element == Type::U8 {
                let text = json.as_str().ok_or_else(|| expected("base64 text", json))?;
                let bytes = BASE64
                    .decode(text)
                    .map_err(|e| ConvertError::new(format!("expected base64 text: {e}")))?;
                Val::List(bytes.into_iter().map(Val::U8).collect())
            } else if let Some(value_ty) = map_value_type(&element) {
                let object = json
                    .as_object()
                    .ok_or_else(|| expected("an object", json))?;
                let mut entries = Vec::with_capacity(object.len());
                for (key, value) in object {
                    let value = to_val(&value_ty, Some(value)).map_err(|e| e.within(key))?;
                    entries.push(Val::Tuple(vec![Val::String(key.clone()), value]));
                }
                Val::List(entries)
            } else {
                let array = json.as_array().ok_or_else(|| expected("an array", json))?;
                let mut items = Vec::with_capacity(array.len());
                for (i, item) in array.iter().enumerate() {
                    items.push(to_val(&element, Some(item)).map_err(|e| e.within(i.to_string()))?);
                }
                Val::List(items)
            }
        }
        Type::Record(record) => {
            let object = json
                .as_object()
                .ok_or_else(|| expected("an object", json))?;
            record_from(record, object)?
        }
        Type::Tuple(tuple) => {
            let array = json.as_array().ok_or_else(|| expected("an array", json))?;
            if array.len() != tuple.types().len() {
                return Err(ConvertError::new(format!(
                    "expected an array of {} items, found {}",
                    tuple.types().len(),
                    array.len()
                )));
            }
            let mut items = Vec::with_capacity(array.len());
            for (i, (item_ty, item)) in tuple.types().zip(array).enumerate() {
                items.push(to_val(&item_ty, Some(item)).map_err(|e| e.within(i.to_string()))?);
            }
            Val::Tuple(items)
        }
        Type::Option(option) => Val::Option(Some(Box::new(to_val(&option.ty(), Some(json))?))),
        Type::Enum(cases) => {
            let s = json.as_str().ok_or_else(|| expected("a string", json))?;
            if !cases.names().any(|name| name == s) {
                let names: Vec<&str> = cases.names().collect();
                return Err(ConvertError::new(format!(
                    "expected one of {}, found {json}",
                    names.join(", ")
                )));
            }
            Val::Enum(s.to_owned())
        }
        Type::Variant(variant) => untagged_variant(variant, json)?,
        other => {
            return Err(ConvertError::new(format!(
                "the contract uses a type the host cannot convert: {other:?}"
            )))
        }
    })
}

/// The value of a key that is missing or `null`.
fn absent(ty: &Type) -> Result<Val, ConvertError> {
    Ok(match ty {
        Type::Option(_) => Val::Option(None),
        Type::List(_) => Val::List(Vec::new()),
        Type::Bool => Val::Bool(false),
        // A missing record is read as `{}`, so its own required fields
        // report what is missing.
        Type::Record(record) => record_from(record, &Map::new())?,
        _ => return Err(ConvertError::new("missing")),
    })
}

fn record_from(
    record: &wasmtime::component::types::Record,
    object: &Map<String, Value>,
) -> Result<Val, ConvertError> {
    let mut fields = Vec::with_capacity(record.fields().len());
    for field in record.fields() {
        let key = json_name(field.name);
        let value =
            to_val(&field.ty, object.get(key.as_ref())).map_err(|e| e.within(key.as_ref()))?;
        fields.push((field.name.to_owned(), value));
    }
    Ok(Val::Record(fields))
}

/// Whether `json` is of the kind a variant case's payload takes.
fn case_takes(ty: &Type, json: &Value) -> bool {
    match ty {
        Type::String | Type::Char => json.is_string(),
        Type::Bool => json.is_boolean(),
        Type::Float32 | Type::Float64 => json.is_number(),
        Type::S8
        | Type::U8
        | Type::S16
        | Type::U16
        | Type::S32
        | Type::U32
        | Type::S64
        | Type::U64 => json.is_i64() || json.is_u64(),
        Type::List(_) | Type::Tuple(_) => json.is_array(),
        Type::Record(_) => json.is_object(),
        _ => false,
    }
}

fn untagged_variant(
    variant: &wasmtime::component::types::Variant,
    json: &Value,
) -> Result<Val, ConvertError> {
    for case in variant.cases() {
        if case.name == "json" {
            continue;
        }
        if let Some(ty) = &case.ty {
            if case_takes(ty, json) {
                return Ok(Val::Variant(
                    case.name.to_owned(),
                    Some(Box::new(to_val(ty, Some(json))?)),
                ));
            }
        }
    }
    if variant.cases().any(|case| case.name == "json") {
        return Ok(Val::Variant(
            "json".to_owned(),
            Some(Box::new(Val::String(json.to_string()))),
        ));
    }
    Err(ConvertError::new(format!(
        "no case of the variant takes {}",
        kind(json)
    )))
}

/// Converts a value of `ty` back to JSON, written over `original` (the JSON
/// it came from, if any) so that keys the contract does not model survive.
///
/// Fails only on values JSON cannot hold: a NaN or infinite float, or a
/// `json` variant case whose text is not JSON.
pub fn to_json(ty: &Type, val: &Val, original: Option<&Value>) -> Result<Value, ConvertError> {
    Ok(match (ty, val) {
        (_, Val::Bool(b)) => Value::Bool(*b),
        (_, Val::S8(n)) => Value::from(*n),
        (_, Val::U8(n)) => Value::from(*n),
        (_, Val::S16(n)) => Value::from(*n),
        (_, Val::U16(n)) => Value::from(*n),
        (_, Val::S32(n)) => Value::from(*n),
        (_, Val::U32(n)) => Value::from(*n),
        (_, Val::S64(n)) => Value::from(*n),
        (_, Val::U64(n)) => Value::from(*n),
        (_, Val::Float32(n)) => float(f64::from(*n))?,
        (_, Val::Float64(n)) => float(*n)?,
        (_, Val::Char(c)) => Value::String(c.to_string()),
        (_, Val::String(s)) => Value::String(s.clone()),
        (Type::List(list), Val::List(items)) => {
            let element = list.ty();
            if element == Type::U8 {
                let bytes: Option<Vec<u8>> = items
                    .iter()
                    .map(|item| match item {
                        Val::U8(byte) => Some(*byte),
                        _ => None,
                    })
                    .collect();
                let bytes =
                    bytes.ok_or_else(|| ConvertError::new("a byte list holds a non-byte"))?;
                Value::String(BASE64.encode(bytes))
            } else if let Some(value_ty) = map_value_type(&element) {
                let mut object = Map::new();
                for item in items {
                    let Val::Tuple(pair) = item else {
                        return Err(ConvertError::new("a map entry is not a pair"));
                    };
                    let [Val::String(key), value] = pair.as_slice() else {
                        return Err(ConvertError::new("a map entry is not a pair"));
                    };
                    let before = original.and_then(|o| o.get(key));
                    let value = to_json(&value_ty, value, before).map_err(|e| e.within(key))?;
                    object.insert(key.clone(), value);
                }
                Value::Object(object)
            } else {
                let mut array = Vec::with_capacity(items.len());
                for (i, item) in items.iter().enumerate() {
                    array.push(to_json(&element, item, None).map_err(|e| e.within(i.to_string()))?);
                }
                Value::Array(array)
            }
        }
        (Type::Record(record), Val::Record(fields)) => {
            let mut object = match original {
                Some(Value::Object(object)) => object.clone(),
                _ => Map::new(),
            };
            for (field, (_, value)) in record.fields().zip(fields) {
                let key = json_name(field.name);
                if matches!(value, Val::Option(None)) && !object.contains_key(key.as_ref()) {
                    // Leave an unset field out rather than adding a null.
                    continue;
                }
                let before = object.get(key.as_ref());
                let value =
                    to_json(&field.ty, value, before).map_err(|e| e.within(key.as_ref()))?;
                object.insert(key.into_owned(), value);
            }
            Value::Object(object)
        }
        (Type::Tuple(tuple), Val::Tuple(items)) => {
            let mut array = Vec::with_capacity(items.len());
            for (item_ty, item) in tuple.types().zip(items) {
                array.push(to_json(&item_ty, item, None)?);
            }
            Value::Array(array)
        }
        (Type::Option(_), Val::Option(None)) => Value::Null,
        (Type::Option(option), Val::Option(Some(inner))) => to_json(&option.ty(), inner, original)?,
        (_, Val::Enum(name)) => Value::String(name.clone()),
        (Type::Variant(_), Val::Variant(name, Some(payload))) if name == "json" => {
            let Val::String(text) = payload.as_ref() else {
                return Err(ConvertError::new("a `json` case must carry a string"));
            };
            serde_json::from_str(text)
                .map_err(|e| ConvertError::new(format!("the `json` case is not JSON: {e}")))?
        }
        (Type::Variant(variant), Val::Variant(name, payload)) => {
            let case = variant.cases().find(|c| c.name == name.as_str());
            match (case.and_then(|c| c.ty), payload) {
                (Some(ty), Some(payload)) => to_json(&ty, payload, original)?,
                _ => Value::String(name.clone()),
            }
        }
        (ty, val) => {
            return Err(ConvertError::new(format!(
                "a value does not match its type ({val:?} for {ty:?})"
            )))
        }
    })
}

/// A float as JSON. Whole numbers are written as integers, so a claim
/// that came in as `42` goes back as `42`, not `42.0`.
fn float(n: f64) -> Result<Value, ConvertError> {
    const EXACT: f64 = 9_007_199_254_740_992.0; // 2^53
    if n.fract() == 0.0 && n.abs() <= EXACT {
        return Ok(Value::from(n as i64));
    }
    Number::from_f64(n)
        .map(Value::Number)
        .ok_or_else(|| ConvertError::new(format!("{n} is not a JSON number")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_names_are_camel_case() {
        assert_eq!(json_name("user-pool-id"), "userPoolId");
        assert_eq!(json_name("op"), "op");
        assert_eq!(json_name("aws-sdk-version"), "awsSdkVersion");
        assert_eq!(json_name("enable-sms-mfa"), "enableSMSMFA");
    }
}
