//! JSON bodies of the control routes, validated while they are parsed: the first
//! bad name stops the parse, and what is kept is compact. A `serde_json::Value`
//! of a body with 100k small members costs about 30 times the body; these cost
//! about its size.

use super::bad;
use crate::http::Response;
use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, Visitor};
use std::fmt;

/// `/v3/environ` bodies may be up to this long when they unset with `null`:
/// the 1 MiB limit counts each `null` as the two bytes of `""`, the other way
/// to unset, so unsetting is never held to a tighter limit than setting.
pub const ENV_MAX_BODY: usize = super::MAX_BODY + super::MAX_BODY / 4;

/// A `/v3/environ` update in body order: names and values back to back in one
/// string. Applied in order, the last mention of a name wins.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EnvUpdate {
    text: String,
    /// Name length, and value length (`None`: unset).
    items: Vec<(u32, Option<u32>)>,
}

impl EnvUpdate {
    pub fn iter(&self) -> impl Iterator<Item = (&str, Option<&str>)> + '_ {
        let mut at = 0;
        self.items.iter().map(move |(k, v)| {
            let key = &self.text[at..at + *k as usize];
            at += *k as usize;
            let value = v.map(|v| {
                let value = &self.text[at..at + v as usize];
                at += v as usize;
                value
            });
            (key, value)
        })
    }

    pub fn len(&self) -> usize {
        self.items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }
}

impl<'a> FromIterator<(&'a str, Option<&'a str>)> for EnvUpdate {
    fn from_iter<I: IntoIterator<Item = (&'a str, Option<&'a str>)>>(iter: I) -> Self {
        let mut u = EnvUpdate::default();
        for (k, v) in iter {
            u.text.push_str(k);
            if let Some(v) = v {
                u.text.push_str(v);
            }
            u.items.push((k.len() as u32, v.map(|v| v.len() as u32)));
        }
        u
    }
}

pub fn valid_env_key(k: &str) -> bool {
    let mut chars = k.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Where a parse stopped on purpose: the response to give instead of a JSON error.
type Abort = Option<Response>;

/// Why a body's top-level object could not be read.
enum Failure {
    /// Valid JSON, but not an object.
    NotObject,
    /// Invalid JSON, or a visitor stopped the parse (then it left a response).
    Invalid(serde_json::Error),
}

/// Runs `visit` over the body's top-level object.
fn parse_object<T>(
    body: &[u8],
    visit: impl for<'de> Visitor<'de, Value = T>,
) -> Result<T, Failure> {
    let starts_object = body
        .iter()
        .find(|b| !b.is_ascii_whitespace())
        .is_some_and(|b| *b == b'{');
    if !starts_object {
        // Skipping a value allocates nothing, so any JSON can be told apart.
        return Err(match serde_json::from_slice::<IgnoredAny>(body) {
            Ok(_) => Failure::NotObject,
            Err(e) => Failure::Invalid(e),
        });
    }
    let mut de = serde_json::Deserializer::from_slice(body);
    de.deserialize_map(visit)
        .and_then(|v| de.end().map(|_| v))
        .map_err(Failure::Invalid)
}

fn unprocessable(msg: &str) -> Response {
    bad(422, &format!("Unprocessable Entity: {msg}"))
}

/// `/v3/environ`: names must be valid variable names (400), values strings or
/// null (422); `""` unsets like `null`.
pub fn env(body: &[u8]) -> Result<EnvUpdate, Response> {
    let mut abort = None;
    let (update, nulls) =
        parse_object(body, EnvVisitor { abort: &mut abort }).map_err(|f| match f {
            Failure::NotObject => unprocessable("body must be a JSON object"),
            Failure::Invalid(e) => {
                abort.unwrap_or_else(|| unprocessable(&format!("invalid JSON: {e}")))
            }
        })?;
    if body.len() - 2 * nulls > super::MAX_BODY {
        return Err(bad(
            413,
            &format!(
                "request body larger than {} bytes (a null counts as \"\")",
                super::MAX_BODY
            ),
        ));
    }
    Ok(update)
}

struct EnvVisitor<'a> {
    abort: &'a mut Abort,
}

impl<'de> Visitor<'de> for EnvVisitor<'_> {
    type Value = (EnvUpdate, usize);

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut out = EnvUpdate::default();
        let mut key = String::new();
        let mut nulls = 0;
        while map.next_key_seed(CopyStr(&mut key))?.is_some() {
            if !valid_env_key(&key) {
                *self.abort = Some(bad(
                    400,
                    &format!("invalid environment variable name {key:?}"),
                ));
                return Err(de::Error::custom("invalid name"));
            }
            out.text.push_str(&key);
            let mut refused = None;
            let value = map.next_value_seed(EnvValue {
                text: &mut out.text,
                refused: &mut refused,
            });
            let value = match value {
                Ok(v) => v,
                Err(e) => {
                    if let Some(kind) = refused {
                        *self.abort = Some(unprocessable(&format!(
                            "value of {key:?} must be a string or null, got {kind}"
                        )));
                    }
                    return Err(e);
                }
            };
            if value == EnvValue::NULL {
                nulls += 1;
            }
            let value = match value {
                EnvValue::NULL | EnvValue::EMPTY => None,
                len => Some(len),
            };
            out.items.push((key.len() as u32, value));
        }
        Ok((out, nulls))
    }
}

/// Copies a string key into a reused buffer (escapes already decoded).
struct CopyStr<'a>(&'a mut String);

impl<'de> DeserializeSeed<'de> for CopyStr<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for CopyStr<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a string")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<(), E> {
        self.0.clear();
        self.0.push_str(v);
        Ok(())
    }
}

/// Appends a string value to `text`; returns its length, or `NULL`. A value of
/// another kind is an error, and `refused` says which kind it was.
struct EnvValue<'a> {
    text: &'a mut String,
    refused: &'a mut Option<String>,
}

impl EnvValue<'_> {
    const NULL: u32 = u32::MAX;
    const EMPTY: u32 = 0;

    fn refuse<E: de::Error>(self, kind: &str) -> Result<u32, E> {
        *self.refused = Some(kind.to_string());
        Err(E::custom("value must be a string or null"))
    }
}

impl<'de> DeserializeSeed<'de> for EnvValue<'_> {
    type Value = u32;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<u32, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for EnvValue<'_> {
    type Value = u32;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a string or null")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<u32, E> {
        self.text.push_str(v);
        Ok(v.len() as u32)
    }

    fn visit_unit<E: de::Error>(self) -> Result<u32, E> {
        Ok(Self::NULL)
    }

    fn visit_none<E: de::Error>(self) -> Result<u32, E> {
        Ok(Self::NULL)
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<u32, E> {
        self.refuse(&v.to_string())
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<u32, E> {
        self.refuse(&v.to_string())
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<u32, E> {
        self.refuse(&v.to_string())
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<u32, E> {
        self.refuse(&serde_json::Number::from_f64(v).map_or(v.to_string(), |n| n.to_string()))
    }

    fn visit_seq<A: de::SeqAccess<'de>>(self, _: A) -> Result<u32, A::Error> {
        self.refuse("an array")
    }

    fn visit_map<A: MapAccess<'de>>(self, _: A) -> Result<u32, A::Error> {
        self.refuse("an object")
    }
}

/// `/v3/metric`: each name must be a configured metric (`known`); the first one
/// that is not stops the parse (400). Values are kept as JSON scalars for
/// `Metrics::apply` to check; an array or object is refused at once (400). A
/// name given twice keeps its first place and its last value.
pub fn metric(
    body: &[u8],
    known: &dyn Fn(&str) -> bool,
) -> Result<Vec<(String, serde_json::Value)>, Response> {
    let mut abort = None;
    let visit = MetricVisitor {
        known,
        abort: &mut abort,
    };
    parse_object(body, visit).map_err(|f| match f {
        Failure::NotObject => unprocessable("body must be a JSON object"),
        Failure::Invalid(e) => {
            abort.unwrap_or_else(|| unprocessable(&format!("invalid JSON: {e}")))
        }
    })
}

struct MetricVisitor<'a> {
    known: &'a dyn Fn(&str) -> bool,
    abort: &'a mut Abort,
}

impl<'de> Visitor<'de> for MetricVisitor<'_> {
    type Value = Vec<(String, serde_json::Value)>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut out: Vec<(String, serde_json::Value)> = Vec::new();
        let mut key = String::new();
        while map.next_key_seed(CopyStr(&mut key))?.is_some() {
            if !(self.known)(&key) {
                *self.abort = Some(bad(400, &format!("unknown metric {key:?}")));
                return Err(de::Error::custom("unknown metric"));
            }
            let mut refused = None;
            let value = match map.next_value_seed(Scalar(&mut refused)) {
                Ok(v) => v,
                Err(e) => {
                    if let Some(kind) = refused {
                        *self.abort = Some(bad(
                            400,
                            &format!("metric {key:?}: value must be a number, not {kind}"),
                        ));
                    }
                    return Err(e);
                }
            };
            match out.iter_mut().find(|(k, _)| *k == key) {
                Some((_, v)) => *v = value,
                None => out.push((key.clone(), value)),
            }
        }
        Ok(out)
    }
}

/// A JSON scalar as a `serde_json::Value`; an array or object is an error,
/// named in the slot given, without reading it.
struct Scalar<'a>(&'a mut Option<&'static str>);

impl<'de> DeserializeSeed<'de> for Scalar<'_> {
    type Value = serde_json::Value;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Scalar<'_> {
    type Value = serde_json::Value;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a number or a string")
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Self::Value, E> {
        Ok(v.into())
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
        Ok(v.into())
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
        Ok(v.into())
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
        Ok(serde_json::Number::from_f64(v).map_or(serde_json::Value::Null, Into::into))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Ok(v.into())
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
        Ok(v.into())
    }

    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(serde_json::Value::Null)
    }

    fn visit_seq<A: de::SeqAccess<'de>>(self, _: A) -> Result<Self::Value, A::Error> {
        *self.0 = Some("an array");
        Err(de::Error::custom("an array"))
    }

    fn visit_map<A: MapAccess<'de>>(self, _: A) -> Result<Self::Value, A::Error> {
        *self.0 = Some("an object");
        Err(de::Error::custom("an object"))
    }
}

/// `/v3/signal/<job>`: `{"signal": "NAME"}`; other members are skipped unread.
pub fn signal(body: &[u8]) -> Result<String, Response> {
    let usage = || bad(400, "body must be {\"signal\": \"SIGNAME\"}");
    let mut abort = None;
    let found = parse_object(body, SignalVisitor { abort: &mut abort }).map_err(|f| match f {
        Failure::NotObject => usage(),
        Failure::Invalid(e) => abort.unwrap_or_else(|| bad(400, &format!("invalid JSON: {e}"))),
    })?;
    found.ok_or_else(usage)
}

struct SignalVisitor<'a> {
    abort: &'a mut Abort,
}

impl<'de> Visitor<'de> for SignalVisitor<'_> {
    type Value = Option<String>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut signal = None;
        let mut key = String::new();
        while map.next_key_seed(CopyStr(&mut key))?.is_some() {
            if key != "signal" {
                map.next_value::<IgnoredAny>()?;
                continue;
            }
            let mut refused = None;
            match map.next_value_seed(Scalar(&mut refused)) {
                Ok(serde_json::Value::String(s)) => signal = Some(s),
                Err(e) if refused.is_none() => return Err(e),
                _ => {
                    *self.abort = Some(bad(400, "body must be {\"signal\": \"SIGNAME\"}"));
                    return Err(de::Error::custom("signal is not a string"));
                }
            }
        }
        Ok(signal)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(r: Result<impl fmt::Debug, Response>) -> (u16, String) {
        match r {
            Err(resp) => (
                resp.status,
                String::from_utf8_lossy(&resp.body).into_owned(),
            ),
            Ok(v) => panic!("expected an error, got {v:?}"),
        }
    }

    #[test]
    fn env_keeps_body_order_and_unsets() {
        let u = env(br#"{"A":"1","B":null,"C":"","D":"x=y","A":"2","E":"\u00e9\n"}"#).unwrap();
        let got: Vec<_> = u.iter().collect();
        assert_eq!(
            got,
            [
                ("A", Some("1")),
                ("B", None),
                ("C", None),
                ("D", Some("x=y")),
                ("A", Some("2")),
                ("E", Some("é\n")),
            ]
        );
        assert_eq!(u.len(), 6);
        assert!(env(b" {} ").unwrap().is_empty());
    }

    #[test]
    fn env_errors_name_what_is_wrong() {
        assert_eq!(
            status(env(br#"{"OK":"1","1BAD":"x"}"#)),
            (400, "invalid environment variable name \"1BAD\"\n".into())
        );
        // an escaped name is checked once decoded
        assert_eq!(status(env(br#"{"A\u0000":"x"}"#)).0, 400);
        for (body, kind) in [
            (&br#"{"A":1}"#[..], "1"),
            (br#"{"A":true}"#, "true"),
            (br#"{"A":1.5}"#, "1.5"),
            (br#"{"A":[1,2]}"#, "an array"),
            (br#"{"A":{"x":1}}"#, "an object"),
        ] {
            assert_eq!(
                status(env(body)),
                (
                    422,
                    format!("Unprocessable Entity: value of \"A\" must be a string or null, got {kind}\n")
                ),
                "{}",
                String::from_utf8_lossy(body)
            );
        }
        assert_eq!(
            status(env(b"[1]")),
            (
                422,
                "Unprocessable Entity: body must be a JSON object\n".into()
            )
        );
        for body in [&b"not json"[..], b"{\"A\":\"1\"", b"{\"A\":\"1\"} x", b""] {
            let (code, msg) = status(env(body));
            assert_eq!(code, 422);
            assert!(
                msg.starts_with("Unprocessable Entity: invalid JSON: "),
                "{msg}"
            );
        }
    }

    #[test]
    fn env_counts_a_null_like_an_empty_string() {
        // 1 MiB exactly once each null counts as "" is accepted; a byte more is not.
        let pad = |body: String, to: usize| {
            let mut b = body.into_bytes();
            let close = b.pop();
            b.resize(to - 1, b' ');
            b.extend(close);
            b
        };
        let nulls = 1000;
        let body: String = format!(
            "{{{}}}",
            (0..nulls)
                .map(|i| format!("\"V{i}\":null"))
                .collect::<Vec<_>>()
                .join(",")
        );
        let at = super::super::MAX_BODY + 2 * nulls;
        assert_eq!(env(&pad(body.clone(), at)).unwrap().len(), nulls);
        let (code, msg) = status(env(&pad(body, at + 1)));
        assert_eq!(code, 413);
        assert!(msg.contains("a null counts as \"\""), "{msg}");
    }

    #[test]
    fn metric_stops_at_the_first_unknown_name() {
        let known = |k: &str| k == "a" || k == "b";
        let got = metric(br#"{"a":1,"b":"2.5","a":3}"#, &known).unwrap();
        assert_eq!(
            got,
            [
                ("a".to_string(), serde_json::json!(3)),
                ("b".to_string(), serde_json::json!("2.5")),
            ]
        );
        // the unknown name is reported even though the JSON after it is broken
        assert_eq!(
            status(metric(br#"{"a":1,"zzz":1,"#, &known)),
            (400, "unknown metric \"zzz\"\n".into())
        );
        let (code, msg) = status(metric(br#"{"a":[1,2,3]}"#, &known));
        assert_eq!(code, 400);
        assert!(
            msg.starts_with("metric \"a\": value must be a number, not an array"),
            "{msg}"
        );
        // scalars of the wrong kind are left for Metrics::apply to name
        assert_eq!(
            metric(br#"{"a":true,"b":null}"#, &known).unwrap(),
            [
                ("a".to_string(), serde_json::json!(true)),
                ("b".to_string(), serde_json::Value::Null),
            ]
        );
        assert_eq!(status(metric(b"{", &known)).0, 422);
        assert_eq!(status(metric(b"7", &known)).0, 422);
    }

    #[test]
    fn signal_skips_other_members() {
        assert_eq!(
            signal(br#"{"x":[[1],{"y":2}],"signal":"HUP","z":null}"#).unwrap(),
            "HUP"
        );
        let usage = (400, "body must be {\"signal\": \"SIGNAME\"}\n".to_string());
        assert_eq!(status(signal(b"{}")), usage);
        assert_eq!(status(signal(br#"{"signal":1}"#)), usage);
        assert_eq!(status(signal(br#"{"signal":["HUP"]}"#)), usage);
        assert_eq!(status(signal(b"[\"HUP\"]")), usage);
        let (code, msg) = status(signal(b"{\"signal\":"));
        assert_eq!(code, 400);
        assert!(msg.starts_with("invalid JSON: "), "{msg}");
    }

    #[test]
    fn update_from_pairs_round_trips() {
        let pairs = [("K", Some("v")), ("GONE", None), ("E", Some(""))];
        let u: EnvUpdate = pairs.into_iter().collect();
        assert_eq!(u.iter().collect::<Vec<_>>(), pairs);
    }
}
