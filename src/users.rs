//! Per-job `user`/`group`: names resolved from the container's /etc/passwd and
//! /etc/group, read directly (a static binary has no NSS to ask). The parsing
//! is pure; `resolve` reads the two files.

use std::fmt;

/// Who a job's processes run as.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    pub uid: u32,
    pub gid: u32,
    /// Supplementary groups (the primary group included).
    pub groups: Vec<u32>,
    /// From passwd; `None` for a numeric uid without an entry.
    pub name: Option<String>,
    pub home: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UserError(pub String);

impl fmt::Display for UserError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UserError {}

pub const PASSWD: &str = "/etc/passwd";
pub const GROUP: &str = "/etc/group";

struct PasswdEntry<'a> {
    name: &'a str,
    uid: u32,
    gid: u32,
    home: &'a str,
}

fn passwd_entries(text: &str) -> impl Iterator<Item = PasswdEntry<'_>> {
    text.lines().filter_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        if f.len() < 7 || l.starts_with('#') {
            return None;
        }
        Some(PasswdEntry {
            name: f[0],
            uid: f[2].parse().ok()?,
            gid: f[3].parse().ok()?,
            home: f[5],
        })
    })
}

struct GroupEntry<'a> {
    name: &'a str,
    gid: u32,
    members: &'a str,
}

fn group_entries(text: &str) -> impl Iterator<Item = GroupEntry<'_>> {
    text.lines().filter_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        if f.len() < 4 || l.starts_with('#') {
            return None;
        }
        Some(GroupEntry {
            name: f[0],
            gid: f[2].parse().ok()?,
            members: f[3],
        })
    })
}

/// Resolve `user` (name or number) and optional `group` against the contents
/// of passwd and group files. A numeric user without a passwd entry needs an
/// explicit group, so a job never silently runs with group 0.
pub fn resolve_in(
    user: &str,
    group: Option<&str>,
    passwd: &str,
    groups: &str,
) -> Result<Identity, UserError> {
    let user = user.trim();
    if user.is_empty() {
        return Err(UserError("user must not be empty".into()));
    }
    let numeric = user.parse::<u32>().ok();
    let entry = passwd_entries(passwd).find(|e| match numeric {
        Some(n) => e.uid == n,
        None => e.name == user,
    });
    let gid_from_group = match group.map(str::trim) {
        None => None,
        Some("") => return Err(UserError("group must not be empty".into())),
        Some(g) => Some(match g.parse::<u32>() {
            Ok(n) => n,
            Err(_) => group_entries(groups)
                .find(|e| e.name == g)
                .map(|e| e.gid)
                .ok_or_else(|| UserError(format!("group {g:?} is not in {GROUP}")))?,
        }),
    };
    let (uid, gid, name, home) = match (entry, numeric) {
        (Some(e), _) => (
            e.uid,
            gid_from_group.unwrap_or(e.gid),
            Some(e.name.to_string()),
            Some(e.home.to_string()).filter(|h| !h.is_empty()),
        ),
        (None, Some(n)) => match gid_from_group {
            Some(g) => (n, g, None, None),
            None => {
                return Err(UserError(format!(
                    "user {n} is not in {PASSWD}: give a group too"
                )))
            }
        },
        (None, None) => return Err(UserError(format!("user {user:?} is not in {PASSWD}"))),
    };
    let mut list = vec![gid];
    if let Some(n) = &name {
        for g in group_entries(groups) {
            if g.members.split(',').any(|m| m.trim() == n) && !list.contains(&g.gid) {
                list.push(g.gid);
            }
        }
    }
    Ok(Identity {
        uid,
        gid,
        groups: list,
        name,
        home,
    })
}

/// `resolve_in` against /etc/passwd and /etc/group; a missing file reads as empty.
pub fn resolve(user: &str, group: Option<&str>) -> Result<Identity, UserError> {
    let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
    resolve_in(user, group, &read(PASSWD), &read(GROUP))
}

/// Switching to `id` needs root unless it is who we already are.
pub fn check_can_switch(id: &Identity) -> Result<(), UserError> {
    // SAFETY: geteuid/getegid take no arguments and cannot fail.
    let (euid, egid) = unsafe { (libc::geteuid(), libc::getegid()) };
    if euid == 0 || (id.uid == euid && id.gid == egid) {
        return Ok(());
    }
    Err(UserError(format!(
        "running as uid {euid}, not root: cannot switch to uid {} gid {}",
        id.uid, id.gid
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    const PW: &str = "root:x:0:0:root:/root:/bin/sh\n\
                      # comment\n\
                      nginx:x:101:101:nginx:/var/cache/nginx:/sbin/nologin\n\
                      nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n\
                      broken line\n";
    const GR: &str =
        "root:x:0:\nnginx:x:101:\nwww:x:33:nginx,alice\nlog:x:4: nginx \nnogroup:x:65534:\n";

    #[test]
    fn names_and_numbers() {
        let id = resolve_in("nginx", None, PW, GR).unwrap();
        assert_eq!((id.uid, id.gid), (101, 101));
        assert_eq!(id.groups, vec![101, 33, 4]);
        assert_eq!(id.home.as_deref(), Some("/var/cache/nginx"));
        let id = resolve_in("101", Some("www"), PW, GR).unwrap();
        assert_eq!((id.uid, id.gid), (101, 33));
        assert_eq!(id.name.as_deref(), Some("nginx"));
        assert_eq!(id.groups, vec![33, 4]);
        let id = resolve_in("5000", Some("5000"), PW, GR).unwrap();
        assert_eq!((id.uid, id.gid, id.groups), (5000, 5000, vec![5000]));
        assert_eq!(id.home, None);
    }

    #[test]
    fn unknown_names_are_errors() {
        let e = |u: &str, g: Option<&str>| resolve_in(u, g, PW, GR).unwrap_err().0;
        assert_eq!(e("ngnix", None), "user \"ngnix\" is not in /etc/passwd");
        assert_eq!(
            e("nginx", Some("wheel")),
            "group \"wheel\" is not in /etc/group"
        );
        assert_eq!(
            e("5000", None),
            "user 5000 is not in /etc/passwd: give a group too"
        );
        assert_eq!(e(" ", None), "user must not be empty");
    }
}
