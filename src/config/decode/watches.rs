//! `watches[]`: upstream services, or keys (`key`), watched in the catalog;
//! each change is an event from `watch.<name>`.

use crate::config::json5::{Spanned, Value};
use crate::config::reader::Reader;
use crate::config::types::WatchConfig;
use std::time::Duration;

use super::jobs::{is_service_name, NAME_RULE};

impl Reader<'_, '_> {
    pub(super) fn watches(&mut self, v: &Spanned, etcd_on: bool) -> Vec<WatchConfig> {
        let Value::Array(items) = &v.value else {
            self.expected("watches", v, "an array");
            return Vec::new();
        };
        let mut watches: Vec<WatchConfig> = Vec::new();
        let mut seen: Vec<(String, String)> = Vec::new();
        for (i, item) in items.iter().enumerate() {
            if matches!(item.value, Value::Null) {
                continue;
            }
            let path = format!("watches[{i}]");
            let Some(f) = self.fields(item, &path, &["name", "interval", "tag", "dc", "key"])
            else {
                continue;
            };
            let name = self.name(&f);
            let name_path = f.path("name");
            let name_line = f.line_of("name");
            if name.trim().is_empty() {
                // already reported
            } else if !is_service_name(&name) {
                self.err(&name_path, name_line, NAME_RULE);
            } else if let Some((_, first)) = seen.iter().find(|(n, _)| *n == name) {
                let msg = format!("duplicate watch name '{name}' (first used by {first})");
                self.err(&name_path, name_line, msg);
            } else {
                seen.push((name.clone(), path.clone()));
            }
            let interval = self.positive_int(&f, "interval").unwrap_or(1);
            let tag = self.text_field(&f, "tag");
            let dc = self.text_field(&f, "dc");
            if etcd_on && dc.is_some() {
                let msg = "'dc' is a Consul datacenter and does not apply to etcd; remove it";
                self.err(&f.path("dc"), f.line_of("dc"), msg);
            }
            let key = self.string_field(&f, "key");
            if let Some(k) = &key {
                if k.trim().is_empty() {
                    self.err(&f.path("key"), f.line_of("key"), "'key' must not be blank");
                }
                if tag.is_some() {
                    let msg = "'tag' applies to service watches only, not to a 'key' watch";
                    self.err(&f.path("tag"), f.line_of("tag"), msg);
                }
            }
            watches.push(WatchConfig {
                name,
                interval: Duration::from_secs(interval.into()),
                tag,
                dc,
                key,
            });
        }
        watches
    }
}
