//! Conversion plans: how a handler's argument and result types convert,
//! worked out once when a plugin loads (see [`Plan`]).

use super::*;

/// How to convert values of one WIT type, worked out once when a plugin
/// is loaded: the record fields' JSON keys and the shape of each nested
/// type, so that converting an event walks this rather than asking
/// wasmtime for the types and spelling the keys again on every call.
/// [`Plan::to_val`] and [`Plan::to_json`] give exactly what [`to_val`] and
/// [`to_json`] give for the same type; the shapes the contract rarely uses
/// (numbers, enums, variants, tuples, bytes) are handed to them.
#[derive(Debug, Clone)]
pub struct Plan {
    ty: Type,
    shape: Shape,
}

#[derive(Debug, Clone)]
enum Shape {
    Bool,
    String,
    Record(Vec<FieldPlan>),
    Option(Box<Plan>),
    /// `list<tuple<string, T>>`: a JSON object; the plan of `T`.
    Map(Box<Plan>),
    /// Any other list but `list<u8>`; the plan of its element.
    List(Box<Plan>),
    /// Converted by [`to_val`] and [`to_json`].
    Other,
}

#[derive(Debug, Clone)]
struct FieldPlan {
    /// The WIT field name (kebab-case), as `Val::Record` names it.
    name: String,
    /// Its JSON key ([`json_name`]).
    key: String,
    plan: Plan,
}

impl Plan {
    /// The plan for values of `ty`.
    pub fn new(ty: &Type) -> Plan {
        let shape = match ty {
            Type::Bool => Shape::Bool,
            Type::String => Shape::String,
            Type::Record(record) => Shape::Record(
                record
                    .fields()
                    .map(|field| FieldPlan {
                        name: field.name.to_owned(),
                        key: json_name(field.name).into_owned(),
                        plan: Plan::new(&field.ty),
                    })
                    .collect(),
            ),
            Type::Option(option) => Shape::Option(Box::new(Plan::new(&option.ty()))),
            Type::List(list) => {
                let element = list.ty();
                if element == Type::U8 {
                    Shape::Other
                } else if let Some(value_ty) = map_value_type(&element) {
                    Shape::Map(Box::new(Plan::new(&value_ty)))
                } else {
                    Shape::List(Box::new(Plan::new(&element)))
                }
            }
            _ => Shape::Other,
        };
        Plan {
            ty: ty.clone(),
            shape,
        }
    }

    /// The type this plan converts.
    pub fn ty(&self) -> &Type {
        &self.ty
    }

    /// [`to_val`] by this plan.
    pub fn to_val(&self, json: Option<&Value>) -> Result<Val, ConvertError> {
        let Some(json) = json.filter(|v| !v.is_null()) else {
            return self.absent();
        };
        Ok(match &self.shape {
            Shape::Bool => Val::Bool(json.as_bool().ok_or_else(|| expected("a boolean", json))?),
            Shape::String => Val::String(
                json.as_str()
                    .ok_or_else(|| expected("a string", json))?
                    .to_owned(),
            ),
            Shape::Record(fields) => {
                let object = json
                    .as_object()
                    .ok_or_else(|| expected("an object", json))?;
                record_by_plan(fields, object)?
            }
            Shape::Option(inner) => Val::Option(Some(Box::new(inner.to_val(Some(json))?))),
            Shape::Map(value) => {
                let object = json
                    .as_object()
                    .ok_or_else(|| expected("an object", json))?;
                let mut entries = Vec::with_capacity(object.len());
                for (key, item) in object {
                    let item = value.to_val(Some(item)).map_err(|e| e.within(key))?;
                    entries.push(Val::Tuple(vec![Val::String(key.clone()), item]));
                }
                Val::List(entries)
            }
            Shape::List(element) => {
                let array = json.as_array().ok_or_else(|| expected("an array", json))?;
                let mut items = Vec::with_capacity(array.len());
                for (i, item) in array.iter().enumerate() {
                    items.push(
                        element
                            .to_val(Some(item))
                            .map_err(|e| e.within(i.to_string()))?,
                    );
                }
                Val::List(items)
            }
            Shape::Other => to_val(&self.ty, Some(json))?,
        })
    }

    /// [`absent`] by this plan.
    fn absent(&self) -> Result<Val, ConvertError> {
        match &self.shape {
            Shape::Option(_) => Ok(Val::Option(None)),
            Shape::Map(_) | Shape::List(_) => Ok(Val::List(Vec::new())),
            Shape::Bool => Ok(Val::Bool(false)),
            Shape::Record(fields) => record_by_plan(fields, &Map::new()),
            Shape::String | Shape::Other => absent(&self.ty),
        }
    }

    /// [`to_json`] by this plan.
    pub fn to_json(&self, val: &Val, original: Option<&Value>) -> Result<Value, ConvertError> {
        Ok(match (&self.shape, val) {
            (Shape::Map(value), Val::List(items)) => {
                let mut object = Map::new();
                for item in items {
                    let Val::Tuple(pair) = item else {
                        return Err(ConvertError::new("a map entry is not a pair"));
                    };
                    let [Val::String(key), item] = pair.as_slice() else {
                        return Err(ConvertError::new("a map entry is not a pair"));
                    };
                    let before = original.and_then(|o| o.get(key));
                    let item = value.to_json(item, before).map_err(|e| e.within(key))?;
                    object.insert(key.clone(), item);
                }
                Value::Object(object)
            }
            (Shape::List(element), Val::List(items)) => {
                let mut array = Vec::with_capacity(items.len());
                for (i, item) in items.iter().enumerate() {
                    array.push(
                        element
                            .to_json(item, None)
                            .map_err(|e| e.within(i.to_string()))?,
                    );
                }
                Value::Array(array)
            }
            (Shape::Record(fields), Val::Record(values)) => {
                let mut object = match original {
                    Some(Value::Object(object)) => object.clone(),
                    _ => Map::new(),
                };
                for (field, (_, value)) in fields.iter().zip(values) {
                    if matches!(value, Val::Option(None)) && !object.contains_key(&field.key) {
                        // Leave an unset field out rather than adding a null.
                        continue;
                    }
                    let before = object.get(&field.key);
                    let value = field
                        .plan
                        .to_json(value, before)
                        .map_err(|e| e.within(field.key.as_str()))?;
                    object.insert(field.key.clone(), value);
                }
                Value::Object(object)
            }
            (Shape::Option(_), Val::Option(None)) => Value::Null,
            (Shape::Option(inner), Val::Option(Some(value))) => inner.to_json(value, original)?,
            _ => to_json(&self.ty, val, original)?,
        })
    }
}

fn record_by_plan(fields: &[FieldPlan], object: &Map<String, Value>) -> Result<Val, ConvertError> {
    let mut values = Vec::with_capacity(fields.len());
    for field in fields {
        let value = field
            .plan
            .to_val(object.get(&field.key))
            .map_err(|e| e.within(field.key.as_str()))?;
        values.push((field.name.clone(), value));
    }
    Ok(Val::Record(values))
}
