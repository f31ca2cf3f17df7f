//! `auth_hba_file` (auth_type = hba): PostgreSQL's pg_hba.conf format, the subset PgBouncer reads.
//!
//! Connection types local/host/hostssl/hostnossl; database lists with `all`, `sameuser`,
//! `replication` (never matches a pooled login), names and `@file`; user lists with `all`, names,
//! and `@file`; addresses `all`, CIDR (IPv4/IPv6) or address + mask; methods trust, reject, md5,
//! password, scram-sha-256, cert, peer (local lines only) and ldap. Options after the method:
//! `map=NAME` on cert and peer lines (a map of `auth_ident_file`), the `ldap*` options on ldap
//! lines (`auth::ldap`). Pure: the file is read once by [`Hba::load`], and matching does no I/O.
//!
//! A `+group` name (unquoted, in either list or inside an `@file`) makes the whole line be skipped
//! with PgBouncer's warning `could not parse hba config line N`, and the rest of the file is read:
//! that is what PgBouncer's hba.c does (it knows no role membership either). So a line such as
//! `host all +admins,bob ... trust` gives `bob` nothing; the next matching line decides. Any other
//! line we cannot read refuses the whole file (PgBouncer skips those too; we do not, so a typo in
//! a `reject` line cannot silently open access).

use std::net::IpAddr;
use std::path::Path;

/// What an HBA line lets a connection do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HbaMethod {
    /// No password.
    Trust,
    /// Refuse (`login rejected`).
    Reject,
    /// MD5 challenge (SCRAM for SCRAM-stored users).
    Md5,
    /// Cleartext password.
    Password,
    /// SCRAM-SHA-256.
    ScramSha256,
    /// TLS client certificate whose CN is the user (or maps to it).
    Cert,
    /// Unix-socket peer credentials: the client's OS user is the user (or maps to it).
    Peer,
    /// Cleartext password checked by binding to an LDAP server.
    Ldap,
}

/// What the first matching line decides: the method and its options.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HbaRule {
    /// The method.
    pub method: HbaMethod,
    /// `map=NAME` (cert and peer): the `auth_ident_file` map that relates the certificate CN or
    /// OS user to the user names it may log in as.
    pub map: Option<String>,
    /// The `ldap*` options of an ldap line, checked when the file is read.
    pub ldap: Option<crate::auth::ldap::LdapOptions>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ConnType {
    Local,
    Host,
    HostSsl,
    HostNoSsl,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Name {
    All,
    SameUser,
    Replication,
    Exact(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Addr {
    All,
    Net(IpAddr, u8),
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Line {
    conn: ConnType,
    dbs: Vec<Name>,
    users: Vec<Name>,
    addr: Addr,
    rule: HbaRule,
    /// A `gss` line: PgBouncer reads it (GSSAPI builds authenticate with it); here it refuses,
    /// so a client the line was meant for never falls through to a laxer line below.
    gss: bool,
}

/// A parsed HBA file, in file order (first match wins).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Hba {
    lines: Vec<Line>,
    /// Numbers (1-based) of the lines skipped for naming a `+group`, warned about at each load.
    skipped: Vec<usize>,
    /// Numbers (1-based) of `gss` lines: kept, but refusing their connections (no GSSAPI here).
    gss: Vec<usize>,
}

/// Why a line is not taken.
#[derive(Debug)]
enum LineError {
    /// PgBouncer ignores the line and reads on: it names a `+group`.
    Skip,
    /// The file is refused: this text says why.
    Bad(String),
}

impl From<String> for LineError {
    fn from(m: String) -> Self {
        LineError::Bad(m)
    }
}

/// The connection being judged.
pub struct Peer<'a> {
    /// `None` for a Unix-socket client.
    pub addr: Option<IpAddr>,
    /// The client did the TLS handshake.
    pub tls: bool,
    /// The database it asked for.
    pub database: &'a str,
    /// The user it logs in as.
    pub user: &'a str,
}

impl Hba {
    /// Reads and parses `path`; `@file` lists are resolved relative to its directory.
    pub fn load(path: &Path) -> Result<Hba, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let dir = path.parent().unwrap_or(Path::new("."));
        Hba::parse(&text, &|f| {
            let p = dir.join(f);
            std::fs::read_to_string(&p).map_err(|e| format!("cannot read {}: {e}", p.display()))
        })
        .map_err(|e| format!("{}: {e}", path.display()))
    }

    /// Parses HBA text; `include` reads an `@file`.
    pub fn parse(
        text: &str,
        include: &dyn Fn(&str) -> Result<String, String>,
    ) -> Result<Hba, String> {
        let mut lines = Vec::new();
        let mut skipped = Vec::new();
        let mut gss = Vec::new();
        for (no, raw) in text.lines().enumerate() {
            let line = raw.split('#').next().unwrap_or("");
            let f = tokens(line);
            if f.is_empty() {
                continue;
            }
            match parse_line(&f, include) {
                Ok(l) => {
                    if l.gss {
                        gss.push(no + 1);
                    }
                    lines.push(l)
                }
                Err(LineError::Skip) => skipped.push(no + 1),
                Err(LineError::Bad(m)) => return Err(format!("line {}: {m}", no + 1)),
            }
        }
        Ok(Hba {
            lines,
            skipped,
            gss,
        })
    }

    /// The warnings this file deserves, PgBouncer's text first: one per skipped `+group` line.
    pub fn warnings(&self) -> Vec<String> {
        let skipped = self.skipped.iter().map(|n| {
            format!(
                "could not parse hba config line {n}: group names (+group) are not supported, the line is ignored"
            )
        });
        let gss = self.gss.iter().map(|n| {
            format!("hba config line {n}: gss authentication is not supported, the line refuses the connections it matches")
        });
        skipped.chain(gss).collect()
    }

    /// The method of the first matching line; `None` = no line matched.
    pub fn method(&self, p: &Peer<'_>) -> Option<HbaMethod> {
        self.rule(p).map(|r| r.method)
    }

    /// The first matching line's method and options; `None` = no line matched.
    pub fn rule(&self, p: &Peer<'_>) -> Option<&HbaRule> {
        self.lines.iter().find(|l| l.matches(p)).map(|l| &l.rule)
    }

    /// Whether some line names an ident map (then `auth_ident_file` is needed).
    pub fn uses_maps(&self) -> bool {
        self.lines.iter().any(|l| l.rule.map.is_some())
    }
}

/// Splits on whitespace; double quotes keep a token whole (and mark it as a plain name).
fn tokens(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    for ch in line.chars() {
        match ch {
            '"' => {
                quoted = !quoted;
                cur.push(ch);
            }
            c if c.is_whitespace() && !quoted => {
                if !cur.is_empty() {
                    out.push(std::mem::take(&mut cur));
                }
            }
            c => cur.push(c),
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    join_lists(out)
}

/// PgBouncer (as PostgreSQL) reads a database or user list across blanks around its commas:
/// `user1,user2 , user3` is one list. Only those two fields (the 2nd and 3rd) are joined.
fn join_lists(tokens: Vec<String>) -> Vec<String> {
    let mut out: Vec<String> = Vec::with_capacity(tokens.len());
    for t in tokens {
        let building_list = matches!(out.len(), 2 | 3);
        match out.last_mut() {
            Some(last) if building_list && (last.ends_with(',') || t.starts_with(',')) => {
                last.push_str(&t)
            }
            _ => out.push(t),
        }
    }
    out
}

fn names(
    field: &str,
    include: &dyn Fn(&str) -> Result<String, String>,
) -> Result<Vec<Name>, LineError> {
    let mut out = Vec::new();
    for item in field.split(',').filter(|s| !s.is_empty()) {
        if let Some(q) = item.strip_prefix('"').and_then(|s| s.strip_suffix('"')) {
            out.push(Name::Exact(q.to_string()));
        } else if let Some(file) = item.strip_prefix('@') {
            let text = include(file).map_err(LineError::Bad)?;
            for word in text
                .lines()
                .map(|l| l.split('#').next().unwrap_or(""))
                .flat_map(|l| l.split([',', ' ', '\t']))
                .filter(|w| !w.is_empty())
            {
                out.extend(names(word, include)?);
            }
        } else {
            out.push(match item {
                "all" => Name::All,
                "sameuser" => Name::SameUser,
                "replication" => Name::Replication,
                g if g.starts_with('+') => return Err(LineError::Skip),
                n => Name::Exact(n.to_string()),
            });
        }
    }
    if out.is_empty() {
        return Err(format!("empty list \"{field}\"").into());
    }
    Ok(out)
}

fn parse_line(
    f: &[String],
    include: &dyn Fn(&str) -> Result<String, String>,
) -> Result<Line, LineError> {
    let conn = match f[0].as_str() {
        "local" => ConnType::Local,
        "host" => ConnType::Host,
        "hostssl" => ConnType::HostSsl,
        "hostnossl" => ConnType::HostNoSsl,
        other => return Err(format!("unsupported connection type \"{other}\"").into()),
    };
    let need = if conn == ConnType::Local { 4 } else { 5 };
    if f.len() < need {
        return Err("too few fields".to_string().into());
    }
    let dbs = names(&f[1], include)?;
    let users = names(&f[2], include)?;
    let (addr, rest) = if conn == ConnType::Local {
        (Addr::All, &f[3..])
    } else {
        parse_addr(&f[3..])?
    };
    if rest.first().map(String::as_str) == Some("gss") {
        // Its options (include_realm, krb_realm, map) are for GSSAPI, which refusing ignores.
        return Ok(Line {
            conn,
            dbs,
            users,
            addr,
            rule: HbaRule {
                method: HbaMethod::Reject,
                map: None,
                ldap: None,
            },
            gss: true,
        });
    }
    let method = match rest.first().map(String::as_str) {
        Some("trust") => HbaMethod::Trust,
        Some("reject") => HbaMethod::Reject,
        Some("md5") => HbaMethod::Md5,
        Some("password") => HbaMethod::Password,
        Some("scram-sha-256") => HbaMethod::ScramSha256,
        Some("cert") => HbaMethod::Cert,
        Some("peer") => HbaMethod::Peer,
        Some("ldap") => HbaMethod::Ldap,
        Some(other) => return Err(format!("unsupported method \"{other}\"").into()),
        None => return Err("no method".to_string().into()),
    };
    if method == HbaMethod::Peer && conn != ConnType::Local {
        // PostgreSQL's and PgBouncer's rule: there are no peer credentials over TCP.
        return Err("peer authentication is only supported on local sockets"
            .to_string()
            .into());
    }
    let rule = parse_options(method, &rest[1..])?;
    Ok(Line {
        conn,
        dbs,
        users,
        addr,
        rule,
        gss: false,
    })
}

/// The `name=value` options after the method: `map` for cert and peer, `ldap*` for ldap.
fn parse_options(method: HbaMethod, opts: &[String]) -> Result<HbaRule, String> {
    let mut rule = HbaRule {
        method,
        map: None,
        ldap: None,
    };
    let mut ldap = Vec::new();
    for opt in opts {
        let Some((name, value)) = opt.split_once('=') else {
            return Err(format!(
                "authentication option not in name=value format: {opt}"
            ));
        };
        let value = value
            .strip_prefix('"')
            .and_then(|v| v.strip_suffix('"'))
            .unwrap_or(value)
            .to_string();
        match (method, name) {
            (HbaMethod::Cert | HbaMethod::Peer, "map") => rule.map = Some(value),
            (HbaMethod::Ldap, n) if n.starts_with("ldap") => ldap.push((n.to_string(), value)),
            _ => {
                return Err(format!(
                    "authentication option \"{name}\" is not supported for this method"
                ))
            }
        }
    }
    if method == HbaMethod::Ldap {
        rule.ldap = Some(crate::auth::ldap::LdapOptions::from_pairs(&ldap)?);
    }
    Ok(rule)
}

/// `all`, `addr/bits`, or `addr mask`; returns the fields after the address.
fn parse_addr(f: &[String]) -> Result<(Addr, &[String]), String> {
    let a = f[0].as_str();
    if a == "all" {
        return Ok((Addr::All, &f[1..]));
    }
    if let Some((ip, bits)) = a.split_once('/') {
        let ip: IpAddr = ip.parse().map_err(|_| format!("bad address \"{a}\""))?;
        let max = if ip.is_ipv4() { 32 } else { 128 };
        let bits: u8 = bits
            .parse()
            .ok()
            .filter(|b| *b <= max)
            .ok_or_else(|| format!("bad prefix length in \"{a}\""))?;
        return Ok((Addr::Net(ip, bits), &f[1..]));
    }
    let ip: IpAddr = a.parse().map_err(|_| {
        format!("unsupported address \"{a}\" (host names, samehost and samenet are not supported)")
    })?;
    let mask: IpAddr = f
        .get(1)
        .and_then(|m| m.parse().ok())
        .ok_or_else(|| format!("address \"{a}\" needs a /prefix or a mask"))?;
    let bits = match (ip, mask) {
        (IpAddr::V4(_), IpAddr::V4(m)) => u32::from(m).leading_ones() as u8,
        (IpAddr::V6(_), IpAddr::V6(m)) => u128::from(m).leading_ones() as u8,
        _ => return Err(format!("mask family differs from \"{a}\"")),
    };
    Ok((Addr::Net(ip, bits), &f[2..]))
}

fn in_net(ip: IpAddr, net: IpAddr, bits: u8) -> bool {
    // An IPv4 client on a dual-stack socket shows as ::ffff:a.b.c.d.
    let ip = match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    };
    match (ip, net) {
        (IpAddr::V4(a), IpAddr::V4(n)) => {
            let mask = u32::MAX.checked_shl(32 - u32::from(bits)).unwrap_or(0);
            u32::from(a) & mask == u32::from(n) & mask
        }
        (IpAddr::V6(a), IpAddr::V6(n)) => {
            let mask = u128::MAX.checked_shl(128 - u32::from(bits)).unwrap_or(0);
            u128::from(a) & mask == u128::from(n) & mask
        }
        _ => false,
    }
}

impl Line {
    fn matches(&self, p: &Peer<'_>) -> bool {
        let conn_ok = match (self.conn, p.addr) {
            (ConnType::Local, None) => true,
            (ConnType::Host, Some(_)) => true,
            (ConnType::HostSsl, Some(_)) => p.tls,
            (ConnType::HostNoSsl, Some(_)) => !p.tls,
            _ => false,
        };
        let addr_ok = match (&self.addr, p.addr) {
            (Addr::All, _) => true,
            (Addr::Net(net, bits), Some(ip)) => in_net(ip, *net, *bits),
            (Addr::Net(..), None) => false,
        };
        let db_ok = self.dbs.iter().any(|n| match n {
            Name::All => true,
            Name::SameUser => p.database == p.user,
            Name::Replication => false,
            Name::Exact(d) => d == p.database,
        });
        let user_ok = self.users.iter().any(|n| match n {
            Name::All => true,
            Name::Exact(u) => u == p.user,
            Name::SameUser | Name::Replication => false,
        });
        conn_ok && addr_ok && db_ok && user_ok
    }
}

#[cfg(test)]
mod tests;
