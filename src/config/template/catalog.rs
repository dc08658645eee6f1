//! What a render job's template reads besides the environment: the services
//! and keys its watches saw, under consul-template's function names.
//!
//! | call                          | value                                        |
//! |-------------------------------|----------------------------------------------|
//! | `service "name"`              | passing instances: `.ID .Name .Address .Port .Tags` |
//! | `key "path"`                  | the key's value; an error while it is absent |
//! | `keyOrDefault "path" "dflt"`  | the value, or `dflt` while it is absent      |
//! | `keyExists "path"`            | whether the key exists                       |
//! | `contains "x" list-or-string` | whether `x` is an element (or a substring)   |
//!
//! The name or path must be a quoted string right after the function, so the
//! parser can list every watch a template reads ([`CatalogRef`]) and the config
//! loader can refuse one that no watch provides before anything runs.

use super::budget::Budget;
use super::exec::{Record, Value};
use std::collections::HashMap;
use std::rc::Rc;

/// Functions only render-job templates have.
pub(super) const FUNCS: &[&str] = &["contains", "key", "keyExists", "keyOrDefault", "service"];

/// What a catalog function reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RefKind {
    Service,
    Key,
}

impl RefKind {
    pub fn as_str(self) -> &'static str {
        match self {
            RefKind::Service => "service",
            RefKind::Key => "key",
        }
    }
}

/// One service or key a template reads, where it reads it first.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CatalogRef {
    pub kind: RefKind,
    /// The service name or key path as written in the template.
    pub name: String,
    pub line: usize,
    pub col: usize,
}

/// The kind of catalog read `func` makes, if it is one.
pub(super) fn ref_kind(func: &str) -> Option<RefKind> {
    match func {
        "service" => Some(RefKind::Service),
        "key" | "keyOrDefault" | "keyExists" => Some(RefKind::Key),
        _ => None,
    }
}

/// One passing instance as a template sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceEntry {
    pub id: String,
    pub name: String,
    pub address: String,
    pub port: u16,
    pub tags: Vec<String>,
}

/// The catalog as a render sees it, keyed by the names the template uses.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CatalogData {
    /// Instances in the order the template will see them.
    pub services: HashMap<String, Vec<ServiceEntry>>,
    /// `None`: the key does not exist (or has not been read yet).
    pub keys: HashMap<String, Option<String>>,
}

fn lookup<'d, T>(map: &'d HashMap<String, T>, kind: &str, name: &str) -> Result<&'d T, String> {
    map.get(name)
        .ok_or_else(|| format!("{kind} {name:?} is not watched"))
}

/// Calls catalog function `name` (its first argument was checked at parse).
pub(super) fn call(
    data: Option<&CatalogData>,
    budget: &mut Budget,
    name: &str,
    args: &[Value],
) -> Result<Value, String> {
    if name == "contains" {
        return contains(args);
    }
    let data = data.ok_or_else(|| format!("{name} is only available to render jobs"))?;
    let want = match name {
        "keyOrDefault" => 2,
        _ => 1,
    };
    if args.len() != want {
        return Err(format!(
            "wrong number of args for {name}: want {want} got {}",
            args.len()
        ));
    }
    let Value::Str(first) = &args[0] else {
        return Err(format!("{name}: expected a string"));
    };
    match name {
        "service" => service(budget, lookup(&data.services, "service", first)?),
        "key" => match lookup(&data.keys, "key", first)? {
            Some(v) => Ok(Value::str(v)),
            None => Err(format!(
                "key {first:?} does not exist (keyOrDefault gives a value for that case)"
            )),
        },
        "keyExists" => Ok(Value::Bool(lookup(&data.keys, "key", first)?.is_some())),
        _ => match lookup(&data.keys, "key", first)? {
            Some(v) => Ok(Value::str(v)),
            None => Ok(args[1].clone()),
        },
    }
}

/// The instances as records, paid for before they are built.
fn service(budget: &mut Budget, list: &[ServiceEntry]) -> Result<Value, String> {
    let text: usize = list
        .iter()
        .map(|e| {
            e.id.len()
                + e.name.len()
                + e.address.len()
                + e.tags.iter().map(String::len).sum::<usize>()
        })
        .sum();
    let values: usize = list.iter().map(|e| 6 + e.tags.len()).sum();
    budget.reserve_list(values, text)?;
    let records = list
        .iter()
        .map(|e| {
            let tags = e.tags.iter().map(|t| Value::str(t)).collect();
            Value::Record(Rc::new(Record {
                type_name: "service",
                fields: vec![
                    ("ID", Value::str(&e.id)),
                    ("Name", Value::str(&e.name)),
                    ("Address", Value::str(&e.address)),
                    ("Port", Value::Int(i64::from(e.port))),
                    ("Tags", Value::list(tags)),
                ],
            }))
        })
        .collect();
    Ok(Value::list(records))
}

/// consul-template's `contains`: `needle` is an element of a list, or a
/// substring of a string.
fn contains(args: &[Value]) -> Result<Value, String> {
    let [needle, haystack] = args else {
        return Err(format!(
            "wrong number of args for contains: want 2 got {}",
            args.len()
        ));
    };
    let Value::Str(needle) = needle else {
        return Err("contains: expected a string to look for".to_string());
    };
    let found = match haystack {
        Value::List(l) => l.iter().any(|v| matches!(v, Value::Str(s) if s == needle)),
        Value::Str(s) => s.contains(&**needle),
        Value::Nil => false,
        other => {
            return Err(format!(
                "contains: cannot look inside {}",
                other.type_name()
            ))
        }
    };
    Ok(Value::Bool(found))
}

#[cfg(test)]
mod tests {
    use super::super::{catalog_refs, render, render_catalog, Limits, TemplateError};
    use super::*;

    fn entry(id: &str, addr: &str, port: u16, tags: &[&str]) -> ServiceEntry {
        ServiceEntry {
            id: id.to_string(),
            name: "app".to_string(),
            address: addr.to_string(),
            port,
            tags: tags.iter().map(|t| t.to_string()).collect(),
        }
    }

    fn data() -> CatalogData {
        let mut d = CatalogData::default();
        d.services.insert(
            "app".into(),
            vec![
                entry("app-1", "10.0.0.1", 8080, &["a", "primary"]),
                entry("app-2", "10.0.0.2", 8081, &[]),
            ],
        );
        d.services.insert("db".into(), Vec::new());
        d.keys
            .insert("cfg/motd".into(), Some("hello\nworld".into()));
        d.keys.insert("cfg/missing".into(), None);
        d
    }

    fn env() -> HashMap<String, String> {
        [("ROLE".to_string(), "lb".to_string())]
            .into_iter()
            .collect()
    }

    fn r(src: &str) -> String {
        match render_catalog(src, &env(), &data()) {
            Ok(s) => s,
            Err(e) => panic!("{src:?}: {e}"),
        }
    }

    fn e(src: &str) -> TemplateError {
        match render_catalog(src, &env(), &data()) {
            Ok(s) => panic!("{src:?} should fail, got {s:?}"),
            Err(e) => e,
        }
    }

    #[test]
    fn service_gives_records_in_order() {
        assert_eq!(
            r("{{ range service \"app\" }}server {{ .Address }}:{{ .Port }}; # {{ .ID }} {{ .Name }}\n{{ end }}"),
            "server 10.0.0.1:8080; # app-1 app\nserver 10.0.0.2:8081; # app-2 app\n"
        );
        assert_eq!(
            r("{{ range service \"app\" }}[{{ join \",\" .Tags }}]{{ end }}"),
            "[a,primary][]"
        );
        assert_eq!(r("{{ len (service \"app\") }}"), "2");
        assert_eq!(
            r("{{ range service \"db\" }}x{{ else }}no db{{ end }}"),
            "no db"
        );
        assert_eq!(
            r("{{ if service \"db\" }}up{{ else }}down{{ end }}"),
            "down"
        );
        // Go prints a struct as its fields in braces
        assert_eq!(
            r("{{ index (service \"app\") 0 }}"),
            "{app-1 app 10.0.0.1 8080 [a primary]}"
        );
        assert_eq!(
            r("{{ printf \"%v\" (index (service \"app\") 1) }}"),
            "{app-2 app 10.0.0.2 8081 []}"
        );
        assert_eq!(
            r("{{ with index (service \"app\") 0 }}{{ printf \"%s:%d\" .Address .Port }}{{ end }}"),
            "10.0.0.1:8080"
        );
        assert_eq!(
            r("{{ range $i, $s := service \"app\" }}{{ $i }}={{ $s.Port }} {{ end }}"),
            "0=8080 1=8081 "
        );
    }

    #[test]
    fn tags_and_contains() {
        assert_eq!(
            r("{{ range service \"app\" }}{{ if .Tags | contains \"primary\" }}{{ .ID }}{{ end }}{{ end }}"),
            "app-1"
        );
        assert_eq!(r("{{ contains \"ll\" \"hello\" }}"), "true");
        assert_eq!(r("{{ contains \"x\" \"hello\" }}"), "false");
        assert!(e("{{ contains 1 \"x\" }}")
            .msg
            .contains("expected a string"));
    }

    #[test]
    fn keys() {
        assert_eq!(r("{{ key \"cfg/motd\" }}"), "hello\nworld");
        assert_eq!(r("{{ keyOrDefault \"cfg/motd\" \"x\" }}"), "hello\nworld");
        assert_eq!(r("{{ keyOrDefault \"cfg/missing\" \"dflt\" }}"), "dflt");
        assert_eq!(
            r("{{ keyExists \"cfg/motd\" }} {{ keyExists \"cfg/missing\" }}"),
            "true false"
        );
        let err = e("line one\n  {{ key \"cfg/missing\" }}");
        assert_eq!((err.line, err.col), (2, 3));
        assert_eq!(
            err.msg,
            "error calling key: key \"cfg/missing\" does not exist (keyOrDefault gives a value for that case)"
        );
    }

    #[test]
    fn env_and_dot_still_work() {
        assert_eq!(r("{{ env \"ROLE\" }} {{ .ROLE }}"), "lb lb");
    }

    #[test]
    fn errors_name_line_and_column() {
        let err = e("a\nb {{ range service \"app\" }}{{ .Nope }}{{ end }}");
        assert_eq!((err.line, err.col), (2, 28));
        assert_eq!(err.msg, "can't evaluate field Nope in type service");
        let err = e("{{ service \"other\" }}");
        assert_eq!(
            err.msg,
            "error calling service: service \"other\" is not watched"
        );
        let err = e("x\n\n   {{ if }}");
        assert_eq!((err.line, err.col), (3, 4));
        assert!(e("{{ eq (index (service \"app\") 0) 1 }}")
            .msg
            .contains("non-comparable"));
    }

    #[test]
    fn refs_are_listed_with_their_place() {
        let refs = catalog_refs(
            "upstream {\n{{ range service \"app\" }}{{ end }}\n}\n{{ keyOrDefault \"cfg/x\" \"\" }} {{ (service \"app\") }}\n  {{ if keyExists \"cfg/y\" }}{{ end }}",
        )
        .unwrap();
        let got: Vec<(RefKind, &str, usize, usize)> = refs
            .iter()
            .map(|r| (r.kind, r.name.as_str(), r.line, r.col))
            .collect();
        assert_eq!(
            got,
            [
                (RefKind::Service, "app", 2, 1),
                (RefKind::Key, "cfg/x", 4, 1),
                (RefKind::Key, "cfg/y", 5, 3),
            ]
        );
        // the name must be a literal, so that it can be checked at load
        let err = catalog_refs("\n{{ $n := \"app\" }}{{ service $n }}").unwrap_err();
        assert_eq!((err.line, err.col), (2, 18));
        assert_eq!(
            err.msg,
            "service takes the service name as a quoted string right after it"
        );
        assert!(catalog_refs("{{ \"k\" | key }}").is_err());
        // a template that does not parse is an error with its place
        let err = catalog_refs("ok\n{{ range service \"app\" }}").unwrap_err();
        assert_eq!(
            (err.line, err.msg.as_str()),
            (2, "missing {{end}} for {{range}}")
        );
    }

    #[test]
    fn config_templates_have_no_catalog_functions() {
        let err = render("{{ service \"app\" }}", &HashMap::new()).unwrap_err();
        assert_eq!(err.msg, "function \"service\" not defined");
        let err = render("{{ key \"k\" }}", &HashMap::new()).unwrap_err();
        assert_eq!(err.msg, "function \"key\" not defined");
    }

    #[test]
    fn render_limits_are_tighter() {
        assert_eq!(Limits::RENDER.output, 1 << 20);
        let big = "{{ range loop 2 }}{{ printf \"%0600000d\" 0 }}{{ end }}";
        assert_eq!(e(big).msg, "output exceeds 1048576 bytes");
        assert!(render(big, &HashMap::new()).is_ok());
        let spin = "{{ range loop 400 }}{{ range loop 400 }}{{ end }}{{ end }}";
        assert_eq!(e(spin).msg, "more than 100000 range iterations");
        let steps =
            "{{ range loop 300 }}{{ range loop 300 }}{{ $a := 1 }}{{ $b := 2 }}{{ end }}{{ end }}";
        assert_eq!(e(steps).msg, "more than 200000 evaluation steps");
        let src = "x".repeat(super::super::RENDER_MAX_SOURCE + 1);
        assert!(e(&src).msg.contains("larger than 65536 bytes"));
        // the same template is fine for the config renderer
        assert!(render(spin, &HashMap::new()).is_ok());
    }

    /// A realistic worst case stays within the budget and takes milliseconds.
    #[test]
    fn a_thousand_backends_render_quickly() {
        let mut d = data();
        let list: Vec<ServiceEntry> = (0..1000)
            .map(|i| {
                entry(
                    &format!("app-{i:04}"),
                    &format!("10.0.{}.{}", i / 256, i % 256),
                    8000,
                    &["web"],
                )
            })
            .collect();
        d.services.insert("app".into(), list);
        let src = "upstream app {\n{{ range service \"app\" }}  server {{ .Address }}:{{ .Port }}{{ if .Tags | contains \"web\" }} weight=2{{ end }}; # {{ .ID }}\n{{ end }}}\n";
        let t = std::time::Instant::now();
        let out = render_catalog(src, &env(), &d).unwrap();
        assert_eq!(out.lines().count(), 1002);
        assert!(
            t.elapsed() < std::time::Duration::from_secs(1),
            "{:?}",
            t.elapsed()
        );
    }
}
